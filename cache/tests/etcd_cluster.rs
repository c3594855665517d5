//! Three cache nodes whose peers come from a real etcd through the registry.

mod common;

use common::{eventually, value_of, Node, TestGetter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use svckit_registry::{EtcdOptions, EtcdRegistry, Instance, Registry};
use svckit_testing::Etcd;

const SERVICE: &str = "groupcache";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discovered_in_etcd_load_each_key_once_and_follow_changes() {
    let etcd = Etcd::start();
    let getter = TestGetter::default();
    let mut nodes = Vec::new();
    let mut registrations = Vec::new();
    let mut followers = Vec::new();
    for _ in 0..3 {
        let node = Node::start(getter.clone()).await;
        // One registry client per node, as separate processes would have.
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .unwrap();
        let instance = Instance::with_random_id(SERVICE, node.addr.to_string()).unwrap();
        registrations.push(registry.register(instance).await.unwrap());
        followers.push(node.cache.follow(&registry.discovery(), SERVICE).unwrap());
        nodes.push(node);
    }
    let mut urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    urls.sort();
    eventually("every node sees the three peers", || {
        nodes.iter().all(|n| n.cache.peers() == urls)
    })
    .await;

    let mut rng = SmallRng::seed_from_u64(11);
    let keys: Vec<String> = (0..300).map(|i| format!("etcd-key-{i}")).collect();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        for key in &keys {
            let group = nodes[rng.random_range(0..3)].group.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                assert_eq!(group.get(&key).await.unwrap(), value_of(&key));
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for key in keys.iter().step_by(7) {
        for n in &nodes {
            assert_eq!(n.group.get(key).await.unwrap(), value_of(key));
        }
    }
    let local_loads: u64 = nodes.iter().map(|n| n.group.stats().local_loads).sum();
    assert_eq!(local_loads, 300);
    assert_eq!(getter.total(), 300);
    assert!(nodes.iter().all(|n| n.group.stats().peer_errors == 0));

    // Node 2 leaves: the others' rings drop it and its keys move without peer errors.
    let gone = nodes[2].url.clone();
    registrations.pop().unwrap().deregister().await.unwrap();
    eventually("the remaining nodes drop the departed peer", || {
        nodes[..2]
            .iter()
            .all(|n| n.cache.peers().len() == 2 && !n.cache.peers().contains(&gone))
    })
    .await;
    nodes[2].stop_server().await;
    for i in 0..30 {
        let key = format!("after-{i}");
        assert_eq!(nodes[i % 2].group.get(&key).await.unwrap(), value_of(&key));
        assert_ne!(nodes[0].cache.owner(&key).unwrap(), gone);
    }
    assert!(nodes[..2].iter().all(|n| n.group.stats().peer_errors == 0));
    for f in followers {
        f.stop().await;
    }
    drop(etcd);
}
