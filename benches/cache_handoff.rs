//! Origin fetches during a rolling restart of a three-node cache, with and without the
//! handoff (issue 13): three `cache_node` processes whose ring follows a real etcd, in front
//! of a counting origin in this process; 1,000 keys warmed; then, under a steady get load over
//! those keys, every node in turn is SIGTERMed (it deregisters, lingers 2 s serving its
//! peers, drains, exits), started again on the same address, and waited for until every ring
//! holds it again. Counted: origin fetches from the first SIGTERM until 2 s after the last
//! node is back in every ring, and failed gets (a node answering an error, not a refused
//! connection).
//!
//! With the handoff, a key's new owner asks the key's previous owner before the origin: keys
//! move away from a stopping node and back to the restarted one through peer fetches.
//! Without it (`--handoff-ms 0`), every move is a reload: about a third of the keys twice per
//! node. The two runs are interleaved, five rounds each.
//!
//! Run with: `cargo build --release --example cache_node && cargo bench --bench cache_handoff`
//! (the bench starts the release build of the example). Needs `etcd`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use svckit::balancer::{HttpClient, Limits};
use svckit_testing::process::{spawn_example, terminate};
use svckit_testing::{free_port, CountingOrigin, Etcd};
use tokio::process::Child;

const KEYS: usize = 1_000;
const ROUNDS: usize = 5;
// SVCKIT_ROUNDS overrides ROUNDS (a quick look).
fn rounds() -> usize {
    std::env::var("SVCKIT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS)
}
const WORKERS: usize = 4;

struct Node {
    listen: String,
    child: Option<Child>,
}

fn start_node(listen: &str, origin: &str, etcd: &str, handoff: bool) -> Child {
    let handoff_ms = if handoff { "30000" } else { "0" };
    spawn_example(
        "cache_node",
        &[
            "--listen",
            listen,
            "--group",
            "bench",
            "--origin",
            origin,
            "--etcd",
            etcd,
            "--handoff-ms",
            handoff_ms,
        ],
    )
}

/// Waits until every node in `listens` lists `peers` peers in its ring.
async fn wait_rings(client: &HttpClient, listens: &[String], peers: usize) {
    let start = Instant::now();
    for listen in listens {
        loop {
            let ok = match client
                .get(&format!("http://{listen}/stats"), Limits::default())
                .await
            {
                Ok(resp) => {
                    serde_json::from_slice::<serde_json::Value>(resp.body())
                        .ok()
                        .and_then(|s| s["peers"].as_array().map(Vec::len))
                        == Some(peers)
                }
                Err(_) => false,
            };
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{listen}: ring never had {peers} peers"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One round: fresh etcd and nodes, warm, rolling restart under load. Returns (origin
/// fetches during the restart, failed gets, gets during the restart).
async fn round(handoff: bool) -> (u64, u64, u64) {
    let etcd = Etcd::builder().arg("--unsafe-no-fsync=true").start();
    let endpoint = etcd.endpoint();
    let origin = CountingOrigin::default();
    let origin_url = origin.start().await;
    let client = HttpClient::new();
    let mut nodes: Vec<Node> = (0..3)
        .map(|_| {
            let listen = format!("127.0.0.1:{}", free_port());
            let child = start_node(&listen, &origin_url, &endpoint, handoff);
            Node {
                listen,
                child: Some(child),
            }
        })
        .collect();
    let listens: Vec<String> = nodes.iter().map(|n| n.listen.clone()).collect();
    wait_rings(&client, &listens, 3).await;

    // Warm: every key once, through any node.
    for k in 0..KEYS {
        let url = format!("http://{}/get?key=k{k}", listens[k % 3]);
        let resp = client.get(&url, Limits::default()).await.unwrap();
        assert!(resp.status().is_success(), "warming k{k}");
    }
    assert_eq!(origin.total(), KEYS as u64);

    // The steady load: workers cycle through the keys, each get on one node (the next one
    // when that node refuses the connection: it is restarting).
    let stop = Arc::new(AtomicBool::new(false));
    let (gets, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // SVCKIT_GET_PAUSE_MS slows each worker down (a light load; default: as fast as it goes).
    let pause = Duration::from_millis(
        std::env::var("SVCKIT_GET_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, listens) = (client.clone(), listens.clone());
            let (stop, gets, failed) = (stop.clone(), gets.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let key = i % KEYS;
                    for attempt in 0..3 {
                        let listen = &listens[(i + attempt) % 3];
                        let url = format!("http://{listen}/get?key=k{key}");
                        match client.get(&url, Limits::default()).await {
                            Ok(resp) => {
                                gets.fetch_add(1, Ordering::Relaxed);
                                if !resp.status().is_success() {
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            Err(_) => continue, // refused: that node is down
                        }
                    }
                    i += WORKERS;
                    if !pause.is_zero() {
                        tokio::time::sleep(pause).await;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = origin.total();
    let gets_before = gets.load(Ordering::Relaxed);
    for node in nodes.iter_mut() {
        let mut child = node.child.take().unwrap();
        terminate(&mut child, Duration::from_secs(20)).await;
        node.child = Some(start_node(&node.listen, &origin_url, &endpoint, handoff));
        wait_rings(&client, &listens, 3).await;
    }
    // The keys of the node restarted last are asked for again within the next cycle of the
    // load: count until the cluster has settled.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fetched = origin.total() - before;
    let during = gets.load(Ordering::Relaxed) - gets_before;
    let mut per_node = Vec::new();
    for listen in &listens {
        if let Ok(resp) = client
            .get(&format!("http://{listen}/stats"), Limits::default())
            .await
        {
            let s: serde_json::Value = serde_json::from_slice(resp.body()).unwrap_or_default();
            per_node.push(format!(
                "local={} handoff={} peer_errors={}",
                s["local_loads"], s["handoff_loads"], s["peer_errors"]
            ));
        }
    }
    println!(
        "HANDOFF   restarted nodes since their start: {}",
        per_node.join(" | ")
    );
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    (fetched, failed.load(Ordering::Relaxed), during)
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for r in 0..rounds() {
        for handoff in [true, false] {
            let (fetched, failed, gets) = round(handoff).await;
            println!(
                "HANDOFF round={r} handoff={handoff} keys={KEYS} origin_fetches_during_restart={fetched} gets_during_restart={gets} failed_gets={failed}"
            );
            if handoff {
                with.push(fetched);
            } else {
                without.push(fetched);
            }
        }
    }
    println!(
        "HANDOFF median_of_{} with_handoff={} without_handoff={} (target with: <= {})",
        with.len(),
        median(with),
        median(without),
        KEYS / 10
    );
}
