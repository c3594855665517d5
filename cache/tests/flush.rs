//! Cluster-wide flush through a generation in a real etcd.

mod common;

use std::time::Instant;

use common::{eventually, hot_cluster, value_of, TestGetter};
use svckit_cache::generation_key;
use svckit_registry::{EtcdOptions, EtcdRegistry, Registry};
use svckit_testing::Etcd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_flush_every_node_reloads_each_key_exactly_once() {
    let etcd = Etcd::start();
    let getter = TestGetter::default();
    let nodes = hot_cluster(&getter, 1).await;
    let mut registries = Vec::new();
    let mut followers = Vec::new();
    for n in &nodes {
        // One registry client per node, as separate processes would have.
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .unwrap();
        followers.push(n.cache.follow_flushes(&registry.keyspace()).unwrap());
        registries.push(registry);
    }
    let keys: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
    for n in &nodes {
        for k in &keys {
            assert_eq!(n.group.get(k).await.unwrap(), value_of(k));
        }
    }
    assert_eq!(getter.total(), 100);
    assert!(nodes.iter().all(|n| n.group.stats().hot_cache.items > 0));

    let started = Instant::now();
    let generation = nodes[0]
        .group
        .flush(&registries[0].keyspace())
        .await
        .unwrap();
    assert_eq!(generation, 1);
    eventually("every node sees generation 1", || {
        nodes.iter().all(|n| n.group.generation() == 1)
    })
    .await;
    eprintln!(
        "flush seen by all three nodes after {:?}",
        started.elapsed()
    );
    for n in &nodes {
        let s = n.group.stats();
        assert_eq!(s.main_cache.items + s.hot_cache.items, 0, "{}", n.url);
    }
    for n in &nodes {
        for k in &keys {
            assert_eq!(n.group.get(k).await.unwrap(), value_of(k));
        }
    }
    for k in &keys {
        assert_eq!(getter.calls_of(k), 2, "{k}");
    }
    let value = registries[1]
        .keyspace()
        .get(&generation_key(common::GROUP))
        .await
        .unwrap();
    assert_eq!(value.get(&generation_key(common::GROUP)), Some(&b"1"[..]));

    // Two flushes at once from two nodes: the compare-and-swap gives each its own number.
    let (ks1, ks2) = (registries[1].keyspace(), registries[2].keyspace());
    let (a, b) = tokio::join!(nodes[1].group.flush(&ks1), nodes[2].group.flush(&ks2));
    let mut got = [a.unwrap(), b.unwrap()];
    got.sort();
    assert_eq!(got, [2, 3]);
    eventually("every node sees generation 3", || {
        nodes.iter().all(|n| n.group.generation() == 3)
    })
    .await;

    // An owner that has not heard of a flush yet adopts it from the first get that carries
    // it: with the watches stopped, node 0 flushes, then asks node 1 for a key it holds.
    for f in followers {
        f.stop().await;
    }
    let key = keys
        .iter()
        .find(|k| common::owner_index(&nodes, k) == 1)
        .unwrap();
    assert_eq!(nodes[1].group.get(key).await.unwrap(), value_of(key));
    let calls = getter.calls_of(key);
    assert_eq!(
        nodes[0]
            .group
            .flush(&registries[0].keyspace())
            .await
            .unwrap(),
        4
    );
    assert_eq!(nodes[1].group.generation(), 3);
    assert_eq!(nodes[0].group.get(key).await.unwrap(), value_of(key));
    assert_eq!(nodes[1].group.generation(), 4);
    assert_eq!(
        getter.calls_of(key),
        calls + 1,
        "the owner reloaded it once"
    );
    drop(etcd);
}

/// A forged generation header cannot switch flushes off, and a flush still works after the
/// generation key was lost from etcd (a restore, a new cluster): any change is a flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_generations_and_a_lost_key_do_not_stop_flushes() {
    let etcd = Etcd::start();
    let getter = TestGetter::default();
    let nodes = hot_cluster(&getter, 1).await;
    let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
        .await
        .unwrap();
    let keyspace = registry.keyspace();
    let _followers: Vec<_> = nodes
        .iter()
        .map(|n| n.cache.follow_flushes(&keyspace).unwrap())
        .collect();

    // A peer get claiming generation u64::MAX: refused as far ahead, nothing cleared.
    let req = http::Request::get(format!("{}/_groupcache/demo/k", nodes[1].url))
        .header("x-svckit-cache-generation", u64::MAX.to_string())
        .body(bytes::Bytes::new())
        .unwrap();
    let resp = svckit_balancer::HttpClient::new()
        .send(req, svckit_balancer::Limits::default())
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(nodes.iter().all(|n| n.group.generation() == 0));

    // Flushes still work: one, then the key is lost and a tool flushes from scratch.
    nodes[0].group.flush(&keyspace).await.unwrap();
    eventually("every node at generation 1", || {
        nodes.iter().all(|n| n.group.generation() == 1)
    })
    .await;
    nodes[0].group.flush(&keyspace).await.unwrap();
    eventually("every node at generation 2", || {
        nodes.iter().all(|n| n.group.generation() == 2)
    })
    .await;
    for n in &nodes {
        n.group.get("k").await.unwrap();
    }
    keyspace.delete(&generation_key("demo")).await.unwrap();
    let written = svckit_cache::flush_group(&keyspace, "demo").await.unwrap();
    assert_eq!(written, 1, "from scratch");
    eventually("every node flushed again", || {
        nodes.iter().all(|n| n.group.generation() == 3)
    })
    .await;
    for n in &nodes {
        let s = n.group.stats();
        assert_eq!(s.main_cache.items + s.hot_cache.items, 0, "{}", n.url);
    }
}
