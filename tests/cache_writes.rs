//! Cache writes across three real `cache_node` processes whose ring follows a real etcd, in
//! front of a counting origin in this process: set, TTL, remove, flush, and a set racing a
//! load. Needs the examples built (`cargo build --examples`, which `./scripts/test` runs).

use std::time::Duration;

use svckit::balancer::{HttpClient, Limits};
use svckit_testing::process::spawn_example;
use svckit_testing::{free_port, CountingOrigin, Etcd};
use tokio::process::Child;
use tokio::time::Instant;

struct Cluster {
    nodes: Vec<String>,
    _children: Vec<Child>,
    _etcd: Etcd,
}

async fn call(method: &str, url: &str, body: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(bytes::Bytes::from(body.to_owned()))
        .unwrap();
    let resp = HttpClient::new()
        .send(request, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (
        resp.status().as_u16(),
        String::from_utf8_lossy(resp.body()).into_owned(),
    )
}

impl Cluster {
    /// Three nodes registered in etcd; returns once each one's ring holds all three.
    async fn start(origin: &str) -> Self {
        let etcd = Etcd::start();
        let endpoint = etcd.endpoint();
        let mut nodes = Vec::new();
        let mut children = Vec::new();
        for _ in 0..3 {
            let listen = format!("127.0.0.1:{}", free_port());
            children.push(spawn_example(
                "cache_node",
                &[
                    "--listen", &listen, "--group", "demo", "--origin", origin, "--etcd", &endpoint,
                ],
            ));
            nodes.push(format!("http://{listen}"));
        }
        let start = Instant::now();
        for node in &nodes {
            loop {
                let ready = match HttpClient::new()
                    .get(&format!("{node}/stats"), Limits::default())
                    .await
                {
                    Ok(resp) => {
                        serde_json::from_slice::<serde_json::Value>(resp.body())
                            .ok()
                            .and_then(|s| s["peers"].as_array().map(Vec::len))
                            == Some(3)
                    }
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{node} never saw 3 peers"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Self {
            nodes,
            _children: children,
            _etcd: etcd,
        }
    }

    async fn get(&self, node: usize, key: &str) -> String {
        let (status, body) = call("GET", &format!("{}/get?key={key}", self.nodes[node]), "").await;
        assert_eq!(status, 200, "GET {key} on node {node}: {body}");
        body
    }

    async fn post(&self, node: usize, path: &str, body: &str) -> (u16, String) {
        call("POST", &format!("{}{path}", self.nodes[node]), body).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn set_ttl_remove_flush_and_a_set_racing_a_load_across_three_processes() {
    let origin = CountingOrigin::default();
    let url = origin.start().await;
    let cluster = Cluster::start(&url).await;

    // A set on one node is served by every node without a getter call.
    let (status, body) = cluster.post(0, "/set?key=s1", "hello").await;
    assert_eq!(status, 204, "{body}");
    for node in 0..3 {
        assert_eq!(cluster.get(node, "s1").await, "hello");
    }
    assert_eq!(origin.fetches("s1"), 0);

    // TTL: every node serves the set value before it expires and reloads after, once.
    let (status, _) = cluster
        .post(1, "/set?key=t1&ttl=5&hot=1", "short-lived")
        .await;
    assert_eq!(status, 204);
    let set_at = Instant::now();
    for node in 0..3 {
        assert_eq!(cluster.get(node, "t1").await, "short-lived");
    }
    // 1.5 s before the expiry (room for a loaded machine's gets) every node still has it (the hot copies carry the owner's
    // expiry instant, not a TTL of their own) ...
    tokio::time::sleep(Duration::from_millis(3500).saturating_sub(set_at.elapsed())).await;
    for node in 0..3 {
        assert_eq!(
            cluster.get(node, "t1").await,
            "short-lived",
            "node {node} before expiry"
        );
    }
    // ... and shortly after, none.
    tokio::time::sleep(Duration::from_millis(5300).saturating_sub(set_at.elapsed())).await;
    for node in 0..3 {
        assert_eq!(
            cluster.get(node, "t1").await,
            "v:t1:1",
            "node {node} after expiry"
        );
    }
    assert_eq!(
        origin.fetches("t1"),
        1,
        "the expired key loaded once for the cluster"
    );

    // Remove reaches every node: afterwards each loads the key from the origin (once).
    for node in 0..3 {
        assert_eq!(cluster.get(node, "r1").await, "v:r1:1");
    }
    let (status, body) = cluster.post(2, "/remove?key=r1", "").await;
    assert_eq!(status, 200, "{body}");
    let removed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(removed["failed"], serde_json::json!([]));
    for node in 0..3 {
        assert_eq!(
            cluster.get(node, "r1").await,
            "v:r1:2",
            "node {node} after remove"
        );
    }

    // Flush: every node drops the group; each key is loaded exactly once more in all.
    let keys: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    for key in &keys {
        for node in 0..3 {
            assert_eq!(cluster.get(node, key).await, format!("v:{key}:1"));
        }
    }
    let (status, body) = cluster.post(0, "/flush", "").await;
    assert_eq!(status, 200, "{body}");
    let generation = serde_json::from_str::<serde_json::Value>(&body).unwrap()["generation"]
        .as_u64()
        .unwrap();
    let start = Instant::now();
    for node in 0..3 {
        loop {
            let (_, stats) = call("GET", &format!("{}/stats", cluster.nodes[node]), "").await;
            let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
            if stats["generation"].as_u64() == Some(generation) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "node {node} never flushed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for key in &keys {
        for node in 0..3 {
            assert_eq!(
                cluster.get(node, key).await,
                format!("v:{key}:2"),
                "{key} on {node}"
            );
        }
        assert_eq!(
            origin.fetches(key),
            2,
            "{key}: one load before the flush, one after"
        );
    }

    // A set while the key is being loaded (the origin takes 600 ms): the set wins.
    let loading = {
        let node = cluster.nodes[1].clone();
        tokio::spawn(async move { call("GET", &format!("{node}/get?key=slow1"), "").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = cluster.post(2, "/set?key=slow1", "the set").await;
    assert_eq!(status, 204);
    let _ = loading.await.unwrap();
    for node in 0..3 {
        assert_eq!(cluster.get(node, "slow1").await, "the set", "node {node}");
    }
}
