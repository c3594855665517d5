//! Three cache nodes on loopback with a static peer list.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::{cluster, eventually, owner_index, value_of, Node, TestGetter};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use svckit_cache::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_load_each_key_exactly_once() {
    let getter = TestGetter::default();
    let nodes = cluster(&getter).await;
    let mut rng = SmallRng::seed_from_u64(7);
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    // Each key asked three times at random nodes, all keys concurrently.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        for key in &keys {
            let group = nodes[rng.random_range(0..3)].group.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let v = group.get(&key).await.unwrap();
                assert_eq!(v, value_of(&key));
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every node returns the same bytes for every key.
    for key in &keys {
        for n in &nodes {
            assert_eq!(
                n.group.get(key).await.unwrap(),
                value_of(key),
                "{key} at {}",
                n.url
            );
        }
    }
    let local_loads: u64 = nodes.iter().map(|n| n.group.stats().local_loads).sum();
    assert_eq!(local_loads, 300);
    assert_eq!(getter.total(), 300);
    for key in &keys {
        assert_eq!(getter.calls_of(key), 1, "{key}");
    }
    // Keys were spread: every node owns some and loaded exactly the ones it owns.
    for (i, n) in nodes.iter().enumerate() {
        let owned = keys.iter().filter(|k| owner_index(&nodes, k) == i).count() as u64;
        assert!(owned > 30, "node {i} owns {owned}");
        assert_eq!(n.group.stats().local_loads, owned);
        assert_eq!(n.group.stats().peer_errors, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_gets_of_one_cold_key_run_the_getter_once() {
    let (getter, gate) = TestGetter::gated();
    let nodes = cluster(&getter).await;
    let key = "cold";
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let group = nodes[i % 3].group.clone();
        tasks.push(tokio::spawn(async move { group.get(key).await }));
    }
    let owner = owner_index(&nodes, key);
    eventually("the owner's getter is called", || getter.calls_of(key) == 1).await;
    gate.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), value_of(key));
    }
    assert_eq!(getter.calls_of(key), 1);
    assert_eq!(nodes[owner].group.stats().local_loads, 1);
    eventually("no flight left", || {
        nodes.iter().all(|n| n.group.in_flight() == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_first_caller_keeps_one_load_for_everyone_else() {
    let (getter, gate) = TestGetter::gated();
    let nodes = cluster(&getter).await;
    let key = "cold-cancelled";
    let owner = owner_index(&nodes, key);
    let first_at = (owner + 1) % 3; // a non-owner: its flight fetches from the owner
    let first = {
        let group = nodes[first_at].group.clone();
        tokio::spawn(async move { group.get(key).await })
    };
    eventually("the load reached the owner's getter", || {
        getter.calls_of(key) == 1
    })
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let mut tasks = Vec::new();
    for i in 0..999 {
        let group = nodes[i % 3].group.clone();
        tasks.push(tokio::spawn(async move { group.get(key).await }));
    }
    gate.send_replace(true);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), value_of(key));
    }
    assert_eq!(getter.calls_of(key), 1);
    eventually("no flight left", || {
        nodes.iter().all(|n| n.group.in_flight() == 0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_down_falls_back_locally_and_ownership_returns() {
    let getter = TestGetter::default();
    let mut nodes = cluster(&getter).await;
    let keys: Vec<String> = (0..60).map(|i| format!("down-{i}")).collect();
    let owned_by_2: Vec<&String> = keys
        .iter()
        .filter(|k| owner_index(&nodes, k) == 2)
        .collect();
    assert!(owned_by_2.len() >= 4);

    nodes[2].stop_server().await;
    for k in &owned_by_2[..2] {
        assert_eq!(nodes[0].group.get(k).await.unwrap(), value_of(k));
    }
    let s0 = nodes[0].group.stats();
    assert_eq!(s0.peer_errors, 2);
    assert_eq!(s0.local_loads, 2, "loaded locally on fallback");

    nodes[2].restart_server().await;
    for k in &owned_by_2[2..4] {
        assert_eq!(nodes[0].group.get(k).await.unwrap(), value_of(k));
    }
    let s0 = nodes[0].group.stats();
    assert_eq!(
        s0.peer_errors, 2,
        "no new peer errors once the owner is back"
    );
    assert_eq!(s0.peer_loads, 2);
    assert_eq!(s0.local_loads, 2);
    assert_eq!(
        nodes[2].group.stats().local_loads,
        2,
        "the owner loads its keys again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getter_errors_are_not_cached() {
    let getter = TestGetter::default();
    let nodes = cluster(&getter).await;
    let key = "flaky";
    let owner = &nodes[owner_index(&nodes, key)];
    let other = &nodes[(owner_index(&nodes, key) + 1) % 3];
    getter.fail.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        match owner.group.get(key).await {
            Err(Error::Getter { group, source, .. }) => {
                assert_eq!(group, "demo");
                assert!(source.to_string().contains("origin refused"));
            }
            other => panic!("expected a getter error, got {other:?}"),
        }
    }
    assert_eq!(getter.calls_of(key), 2, "the error was not cached");
    // Through a peer: the owner answers 500, the asking node falls back and fails too.
    assert!(matches!(
        other.group.get(key).await,
        Err(Error::Getter { .. })
    ));
    assert_eq!(other.group.stats().peer_errors, 1);
    assert_eq!(owner.group.stats().local_load_errors, 3);

    getter.fail.store(false, Ordering::SeqCst);
    assert_eq!(other.group.get(key).await.unwrap(), value_of(key));
    assert_eq!(owner.group.get(key).await.unwrap(), value_of(key));
    assert_eq!(owner.group.stats().local_loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_getter_gives_waiters_an_error() {
    let getter = TestGetter::default();
    let node = Node::start(getter.clone()).await;
    node.cache.set_peers([&node.url]).unwrap();
    getter.panic.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let g = node.group.clone();
            tokio::spawn(async move { g.get("boom").await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            Err(Error::GetterPanicked { .. })
        ));
    }
    eventually("no flight left", || node.group.in_flight() == 0).await;
    getter.panic.store(false, Ordering::SeqCst);
    assert_eq!(node.group.get("boom").await.unwrap(), value_of("boom"));
    assert!(node.group.stats().local_load_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_round_trip_byte_exact_across_nodes() {
    let getter = TestGetter::default();
    let nodes = cluster(&getter).await;
    let long = "k".repeat(1024);
    let long_mixed: String = "é/ ?#%+".repeat(1024 / 10);
    let keys = [
        "/v1/image/gif/001/icon=100x100",
        "//",
        "..",
        "%2F",
        "+",
        " ",
        "?",
        "#",
        "a b+c?d=e#f%zz/../",
        "ключ/ü/😀",
        "",
        ".",
        "/..",
        long.as_str(),
        long_mixed.as_str(),
    ];
    for key in keys {
        let owner = owner_index(&nodes, key);
        let asker = &nodes[(owner + 1) % 3];
        let before = asker.group.stats();
        let owner_before = nodes[owner].group.stats();
        assert_eq!(
            asker.group.get(key).await.unwrap(),
            value_of(key),
            "{key:?}"
        );
        let after = asker.group.stats();
        assert_eq!(
            after.peer_errors, before.peer_errors,
            "no fallback for {key:?}"
        );
        assert_eq!(
            after.local_loads, before.local_loads,
            "no local load for {key:?}"
        );
        assert_eq!(after.peer_loads, before.peer_loads + 1, "{key:?}");
        assert_eq!(
            nodes[owner].group.stats().local_loads,
            owner_before.local_loads + 1
        );
        assert_eq!(
            getter.calls_of(key),
            1,
            "the owner's getter saw exactly {key:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_keys_are_refused_before_the_getter() {
    let getter = TestGetter::default();
    let node = Node::start(getter.clone()).await;
    let key = "x".repeat(1025);
    assert!(matches!(
        node.group.get(&key).await,
        Err(Error::KeyTooLong {
            len: 1025,
            limit: 1024
        })
    ));
    assert_eq!(getter.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_lends_the_value_on_misses_and_hits() {
    let getter = TestGetter::default();
    let node = Node::start(getter.clone()).await;
    node.cache.set_peers([&node.url]).unwrap();
    let key = "/v1/item/42";
    // A miss: loaded once, then lent.
    let got = node.group.get_with(key, |v| v.clone()).await.unwrap();
    assert_eq!(got, value_of(key));
    // A hit: lent in place, counted as a hit, no second load.
    let len = node.group.get_with(key, |v| v.len()).await.unwrap();
    assert_eq!(len, value_of(key).len());
    assert_eq!(getter.calls_of(key), 1);
    let st = node.group.stats();
    assert_eq!((st.gets, st.cache_hits, st.local_loads), (2, 1, 1));

    // Errors come back as from `get`, and `f` is not called.
    let called = std::sync::atomic::AtomicBool::new(false);
    let long = "x".repeat(1025);
    let r = node
        .group
        .get_with(&long, |_| called.store(true, Ordering::SeqCst))
        .await;
    assert!(
        matches!(r, Err(Error::KeyTooLong { len: 1025, .. })),
        "{r:?}"
    );
    getter.fail.store(true, Ordering::SeqCst);
    let r = node
        .group
        .get_with("flaky", |_| called.store(true, Ordering::SeqCst))
        .await;
    assert!(matches!(r, Err(Error::Getter { .. })), "{r:?}");
    assert!(!called.load(Ordering::SeqCst));
}

#[tokio::test]
async fn groups_are_owned_by_their_cache() {
    let a = svckit_cache::Cache::builder("http://127.0.0.1:1")
        .build()
        .unwrap();
    let b = svckit_cache::Cache::builder("http://127.0.0.1:2")
        .build()
        .unwrap();
    let g = TestGetter::default();
    a.new_group("g", 1 << 20, g.clone()).build().unwrap();
    assert!(matches!(
        a.new_group("g", 1 << 20, g.clone()).build(),
        Err(Error::DuplicateGroup { name }) if name == "g"
    ));
    // Another cache is another namespace: no process globals.
    b.new_group("g", 1 << 20, g.clone()).build().unwrap();
    assert!(matches!(
        a.new_group("", 1, g).build(),
        Err(Error::EmptyGroupName)
    ));
    assert_eq!(a.group_names(), ["g"]);
    assert!(svckit_cache::Cache::builder("localhost:80")
        .build()
        .is_err());
    let _ = Arc::new(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_a_peer_is_never_forwarded() {
    let getter = TestGetter::default();
    let a = Node::start(getter.clone()).await;
    let b = Node::start(getter.clone()).await;
    // The two nodes disagree: each believes the other owns every key.
    a.cache.set_peers([&b.url]).unwrap();
    b.cache.set_peers([&a.url]).unwrap();
    assert_eq!(a.group.get("loop?").await.unwrap(), value_of("loop?"));
    let (sa, sb) = (a.group.stats(), b.group.stats());
    assert_eq!((sa.peer_loads, sa.peer_errors, sa.local_loads), (1, 0, 0));
    assert_eq!(sb.server_requests, 1);
    assert_eq!(sb.local_loads, 1, "B loaded it itself");
    assert_eq!(
        sb.loads_deduped, 1,
        "B ran one load, its own (no peer flight)"
    );
    assert_eq!(sb.peer_loads + sb.peer_errors, 0, "B asked no peer");
    assert_eq!(sa.server_requests, 0, "nothing came back to A");
    assert_eq!(getter.calls_of("loop?"), 1);
}
