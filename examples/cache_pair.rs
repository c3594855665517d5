//! Two groupcache nodes with a static peer list, in one process: every key has one owner
//! (golang/groupcache's consistent hash over the peer URLs), a miss on either node is loaded
//! once, by the owner's getter, and the other node fetches the value over the peer protocol.
//!
//! Run with: `cargo run --example cache_pair`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use svckit::cache::{getter_fn, BoxError, Cache};
use svckit::registry::{Lifecycle, MemoryRegistry};
use svckit::status::StatusPage;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (a, b) = (
        TcpListener::bind("127.0.0.1:0").await?,
        TcpListener::bind("127.0.0.1:0").await?,
    );
    let peers = [
        format!("http://{}", a.local_addr()?),
        format!("http://{}", b.local_addr()?),
    ];
    let getter_calls = Arc::new(AtomicUsize::new(0));

    let mut groups = Vec::new();
    for (listener, me) in [a, b].into_iter().zip(&peers) {
        // A cache node: its own URL, the peers (itself included), one group with a getter.
        let cache = Cache::builder(me).build()?;
        cache.set_peers(&peers)?;
        let (calls, me) = (getter_calls.clone(), me.clone());
        let getter = getter_fn(move |key: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            let value = format!("{key}, loaded by {me}");
            async move { Ok::<_, BoxError>(Bytes::from(value)) }
        });
        groups.push(cache.new_group("fruit", 1 << 20, getter).build()?);

        // Serve the peer protocol (`/_groupcache/<group>/<key>`) to the other node, and the
        // node's `/_svckit/status`; the servers stop when `main` returns.
        let registry = MemoryRegistry::new();
        let lifecycle = Lifecycle::builder("cache").handle_signals(false);
        let lifecycle = lifecycle
            .register(&registry, listener.local_addr()?)
            .await?;
        let status = StatusPage::new(&registry)
            .registration(lifecycle.instance())
            .cache(&cache);
        let app = cache.router().merge(status.router());
        tokio::spawn(async move { lifecycle.serve(listener, app).await });
    }

    let fruit = ["apple", "banana", "cherry", "date", "elderberry"];
    for key in fruit {
        for (node, group) in groups.iter().enumerate() {
            let value = group.get(key).await?;
            println!(
                "node {node}: {key:<10} -> {}",
                String::from_utf8_lossy(&value)
            );
        }
    }
    let calls = getter_calls.load(Ordering::SeqCst);
    println!(
        "getter calls: {calls} for {} keys asked on both nodes",
        fruit.len()
    );

    anyhow::ensure!(calls == fruit.len(), "each key should be loaded once");
    Ok(())
}
