//! Cache writes over loopback (issue 13): three `Cache` nodes in this process, each serving
//! the peer protocol on its own loopback port, one group each; flushes go through a real etcd.
//! Five rounds, interleaved:
//!
//! - `set remote`: `Group::set` on node 0 of keys another node owns (one PUT to the owner);
//!   against `set local` (keys node 0 owns: no wire) as the control;
//! - `remove`: `Group::remove` on node 0 (DELETE to the owner, then to the two others at once,
//!   then locally);
//! - `flush`: `Group::flush` on node 0 (a compare-and-swap increment of the generation in
//!   etcd) until all three nodes have adopted the new generation (followed through their
//!   own prefix watches); polled every 50 µs.
//!
//! Run with: `cargo bench --bench cache_writes`. Needs `etcd`.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use svckit::cache::{getter_fn, BoxError, Cache, Group};
use svckit::registry::{EtcdOptions, EtcdRegistry, Registry};
use svckit_testing::Etcd;

const ROUNDS: usize = 5;
const SETS: usize = 400;
const REMOVES: usize = 200;
const FLUSHES: usize = 40;

fn summary(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn node(listener: tokio::net::TcpListener, peers: &[String]) -> (Cache, Group) {
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cache = Cache::builder(&url).build().unwrap();
    let group = cache
        .new_group(
            "bench",
            64 << 20,
            getter_fn(|key: String| async move { Ok::<_, BoxError>(Bytes::from(key)) }),
        )
        .build()
        .unwrap();
    cache.set_peers(peers).unwrap();
    let app = cache.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (cache, group)
}

/// `n` keys (with `tag` in them) that `cache` owns (`local`) or does not.
fn keys(cache: &Cache, n: usize, local: bool, tag: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{tag}-{i}"))
        .filter(|k| (cache.owner(k).as_deref() == Some(cache.self_url())) == local)
        .take(n)
        .collect()
}

async fn time_sets(group: &Group, keys: &[String]) -> Vec<f64> {
    let expire = Some(SystemTime::now() + Duration::from_secs(600));
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let start = Instant::now();
        group
            .set(
                key,
                Bytes::from_static(b"a value of some bytes"),
                expire,
                false,
            )
            .await
            .unwrap();
        out.push(start.elapsed().as_secs_f64() * 1e3);
    }
    out
}

#[tokio::main]
async fn main() {
    let etcd = Etcd::builder().arg("--unsafe-no-fsync=true").start();
    let listeners: Vec<tokio::net::TcpListener> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        v
    };
    let peers: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    let mut followers = Vec::new();
    let mut registries = Vec::new();
    for listener in listeners {
        let (cache, group) = node(listener, &peers).await;
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .unwrap();
        followers.push(cache.follow_flushes(&registry.keyspace()).unwrap());
        registries.push(registry);
        nodes.push((cache, group));
    }
    let (cache0, group0) = (&nodes[0].0, &nodes[0].1);
    let keyspace = registries[0].keyspace();
    // Warm the connections.
    time_sets(group0, &keys(cache0, 50, false, "warm")).await;

    let mut rows: Vec<[f64; 8]> = Vec::new();
    for round in 0..ROUNDS {
        let remote = time_sets(group0, &keys(cache0, SETS, false, &format!("r{round}"))).await;
        let local = time_sets(group0, &keys(cache0, SETS, true, &format!("l{round}"))).await;
        let mut removes = Vec::new();
        for i in 0..REMOVES {
            let key = format!("rm{round}-{i}");
            let start = Instant::now();
            let removed = group0.remove(&key).await.unwrap();
            removes.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(removed.is_complete(), "{:?}", removed.failed());
        }
        let mut flushes = Vec::new();
        for _ in 0..FLUSHES {
            let start = Instant::now();
            let generation = group0.flush(&keyspace).await.unwrap();
            while nodes.iter().any(|(_, g)| g.generation() < generation) {
                assert!(start.elapsed() < Duration::from_secs(5), "flush never seen");
                tokio::time::sleep(Duration::from_micros(50)).await;
            }
            flushes.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let (r50, r99) = summary(remote);
        let (l50, l99) = summary(local);
        let (d50, d99) = summary(removes);
        let (f50, f99) = summary(flushes);
        println!(
            "CACHEW round={round} set_remote_p50_ms={r50:.3} p99_ms={r99:.3} set_local_p50_ms={l50:.4} p99_ms={l99:.4} remove_3_peers_p50_ms={d50:.3} p99_ms={d99:.3} flush_all_nodes_p50_ms={f50:.3} p99_ms={f99:.3}"
        );
        rows.push([r50, r99, l50, l99, d50, d99, f50, f99]);
    }
    let names = [
        "set_remote_p50_ms",
        "set_remote_p99_ms",
        "set_local_p50_ms",
        "set_local_p99_ms",
        "remove_3_peers_p50_ms",
        "remove_3_peers_p99_ms",
        "flush_all_nodes_p50_ms",
        "flush_all_nodes_p99_ms",
    ];
    let line: Vec<String> = (0..8)
        .map(|k| {
            format!(
                "{}={:.3}",
                names[k],
                median(rows.iter().map(|r| r[k]).collect())
            )
        })
        .collect();
    println!("CACHEW median_of_{ROUNDS} {}", line.join(" "));
    drop(followers);
}
