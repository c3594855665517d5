//! Test support: cache nodes serving the peer protocol on loopback, and a getter that
//! counts its calls across the cluster.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use svckit_cache::{BoxError, Cache, CacheBuilder, Getter, Group, Loaded};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const GROUP: &str = "demo";

/// The value the test getter returns for a key: recognisable and byte-exact.
pub fn value_of(key: &str) -> Bytes {
    Bytes::from(format!("value of <{key}>"))
}

/// A getter shared by every node of a test cluster: counts calls per key, can fail on
/// demand, and can wait for a gate before answering.
#[derive(Clone, Debug, Default)]
pub struct TestGetter {
    pub calls: Arc<Mutex<HashMap<String, usize>>>,
    pub fail: Arc<AtomicBool>,
    pub panic: Arc<AtomicBool>,
    pub gate: Option<watch::Receiver<bool>>,
    /// When set, values expire this long after they are loaded.
    pub ttl: Arc<Mutex<Option<Duration>>>,
}

impl TestGetter {
    pub fn gated() -> (Self, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Self {
                gate: Some(rx),
                ..Self::default()
            },
            tx,
        )
    }

    pub fn total(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }

    pub fn calls_of(&self, key: &str) -> usize {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Getter for TestGetter {
    async fn get(&self, key: &str) -> Result<Bytes, BoxError> {
        self.load(key).await.map(Loaded::into_value)
    }

    async fn load(&self, key: &str) -> Result<Loaded, BoxError> {
        tracing::debug!(key, "test getter called");
        *self
            .calls
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        if let Some(gate) = &self.gate {
            let mut gate = gate.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        if self.panic.load(Ordering::SeqCst) {
            panic!("test getter panics on purpose");
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(format!("origin refused {key:?}").into());
        }
        let loaded = Loaded::new(value_of(key));
        Ok(match *self.ttl.lock().unwrap() {
            Some(ttl) => loaded.expires_in(ttl),
            None => loaded,
        })
    }
}

/// One cache node: a Cache with group [`GROUP`], served on a loopback port.
pub struct Node {
    pub cache: Cache,
    pub group: Group,
    pub addr: SocketAddr,
    pub url: String,
    server: Option<(CancellationToken, JoinHandle<()>)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("url", &self.url).finish()
    }
}

impl Node {
    /// A node with default options, hot cache off (so tests see every peer fetch).
    pub async fn start(getter: TestGetter) -> Self {
        Self::start_with(getter, |b| b).await
    }

    pub async fn start_with(
        getter: TestGetter,
        opts: impl FnOnce(CacheBuilder) -> CacheBuilder,
    ) -> Self {
        Self::start_hot(getter, opts, 0).await
    }

    /// A node keeping one in `hot_one_in` peer values in its hot cache (0: none).
    pub async fn start_hot(
        getter: TestGetter,
        opts: impl FnOnce(CacheBuilder) -> CacheBuilder,
        hot_one_in: u32,
    ) -> Self {
        Self::start_group(getter, opts, GROUP, 8 << 20, hot_one_in).await
    }

    /// A node whose group is `name`, of `budget` bytes, keeping one in `hot_one_in` peer
    /// values hot (0: none).
    pub async fn start_group(
        getter: TestGetter,
        opts: impl FnOnce(CacheBuilder) -> CacheBuilder,
        name: &str,
        budget: usize,
        hot_one_in: u32,
    ) -> Self {
        // A port outside the kernel's ephemeral range: a node that restarts binds it again,
        // and no outgoing connection can have taken it meanwhile.
        let port = svckit_testing::free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let cache = opts(Cache::builder(&url).peer_timeout(Duration::from_secs(2)))
            .build()
            .unwrap();
        let group = cache
            .new_group(name, budget, getter)
            .hot_one_in(hot_one_in)
            .build()
            .unwrap();
        let mut node = Self {
            cache,
            group,
            addr,
            url,
            server: None,
        };
        node.serve(listener);
        node
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        let app = self.cache.router();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await
                .unwrap();
        });
        self.server = Some((stop, task));
    }

    /// Stops serving (the cache itself stays).
    pub async fn stop_server(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart_server(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.server {
            stop.cancel();
        }
    }
}

/// Three nodes sharing one getter, each with the full static peer list.
pub async fn cluster(getter: &TestGetter) -> Vec<Node> {
    hot_cluster(getter, 0).await
}

/// Three nodes as [`cluster`], keeping one in `hot_one_in` peer values hot.
pub async fn hot_cluster(getter: &TestGetter, hot_one_in: u32) -> Vec<Node> {
    named_cluster(getter, 3, GROUP, 8 << 20, hot_one_in).await
}

/// `n` nodes sharing one getter, each with group `name` of `budget` bytes (keeping one in
/// `hot_one_in` peer values hot) and the full static peer list.
pub async fn named_cluster(
    getter: &TestGetter,
    n: usize,
    name: &str,
    budget: usize,
    hot_one_in: u32,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Node::start_group(getter.clone(), |b| b, name, budget, hot_one_in).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for n in &nodes {
        n.cache.set_peers(&urls).unwrap();
    }
    nodes
}

/// The node owning `key`.
pub fn owner_index(nodes: &[Node], key: &str) -> usize {
    let owner = nodes[0].cache.owner(key).unwrap();
    nodes.iter().position(|n| n.url == owner).unwrap()
}

/// Waits (up to 5 s) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
