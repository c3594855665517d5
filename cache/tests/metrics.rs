//! The cache's metrics under real traffic: nodes serving the peer protocol on loopback and
//! the test binary's one Prometheus recorder, shared by the tests (each has a group name of
//! its own). The spans of a get are tested in `traces.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use common::{named_cluster, owner_index, value_of, Node, TestGetter};
use svckit_cache::{getter_fn, publish_metrics, BoxError, Cache, Group, Stats};
use svckit_testing::metrics::{install, scrape, Scrape};

/// Publishes every group's counters into the recorder and scrapes it.
fn published() -> Scrape {
    install();
    publish_metrics();
    scrape()
}

/// A scrape's samples of one group.
struct Family<'a> {
    scrape: &'a Scrape,
    group: &'a str,
}

impl<'a> Family<'a> {
    /// The families of `group` in `scrape`.
    fn of(scrape: &'a Scrape, group: &'a str) -> Self {
        Family { scrape, group }
    }

    /// The value of `name` for this group (and `label`, when given); panics when absent, so
    /// a family that is never published fails every assert on it.
    fn get(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        let mut labels = vec![("group", self.group)];
        labels.extend(label);
        let v = self
            .scrape
            .get(name, &labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"));
        assert_eq!(v.fract(), 0.0, "{name}{labels:?} = {v}");
        v as u64
    }

    fn total(&self, name: &str) -> u64 {
        self.get(name, None)
    }

    fn by(&self, name: &str, key: &str, value: &str) -> u64 {
        self.get(name, Some((key, value)))
    }
}

/// The stats of every node's group, summed.
fn summed(nodes: &[Node]) -> Stats {
    nodes.iter().fold(Stats::default(), |acc, n| {
        let s = n.group.stats();
        let mut out = acc;
        out.gets += s.gets;
        out.main_cache.bytes += s.main_cache.bytes;
        out.main_cache.items += s.main_cache.items;
        out.hot_cache.bytes += s.hot_cache.bytes;
        out.hot_cache.items += s.hot_cache.items;
        out
    })
}

/// A node without peers (every load is local) and no server: group `name` of `budget` bytes
/// in one shard.
fn lone(name: &str, budget: usize) -> (Cache, Group) {
    let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
    let group = cache
        .new_group(
            name,
            budget,
            getter_fn(|key: String| async move { Ok::<_, BoxError>(value_of(&key)) }),
        )
        .shards(1)
        .build()
        .unwrap();
    (cache, group)
}

#[tokio::test]
async fn a_lone_node_publishes_its_gets_hits_and_loads() {
    const GROUP: &str = "metrics_lone";
    let (_cache, group) = lone(GROUP, 1 << 20);
    // 20 keys, each got 3 times: K = 60 gets, H = 40 hits, 20 local loads.
    for round in 0..3 {
        for i in 0..20 {
            let key = format!("k{i}");
            assert_eq!(
                group.get(&key).await.unwrap(),
                value_of(&key),
                "round {round}"
            );
        }
    }
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(m.total("svckit_cache_gets_total"), 60);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "main"), 40);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "hot"), 0);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "local"), 20);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "peer"), 0);
    assert_eq!(m.total("svckit_cache_loads_deduped_total"), 20);
    for zero in [
        "svckit_cache_peer_errors_total",
        "svckit_cache_getter_errors_total",
        "svckit_cache_handoff_loads_total",
        "svckit_cache_peer_requests_served_total",
    ] {
        assert_eq!(m.total(zero), 0, "{zero}");
    }
    assert_eq!(m.by("svckit_cache_evictions_total", "tier", "main"), 0);
    let s = group.stats();
    assert_eq!(m.by("svckit_cache_items", "tier", "main"), 20);
    assert_eq!(
        m.by("svckit_cache_bytes", "tier", "main"),
        s.main_cache.bytes
    );
    assert!(s.main_cache.bytes > 20 * 200, "{s:?}");
    assert_eq!(m.by("svckit_cache_items", "tier", "hot"), 0);
    assert_eq!(m.total("svckit_cache_budget_bytes"), 1 << 20);
    // The families are declared, so a scraper sees their types.
    for family in [
        "svckit_cache_gets_total",
        "svckit_cache_bytes",
        "svckit_cache_budget_bytes",
    ] {
        assert!(scrape.families.contains(family), "{family}");
    }

    // Published values follow the traffic from one publish to the next.
    group.get("k0").await.unwrap();
    group.get("k20").await.unwrap();
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(m.total("svckit_cache_gets_total"), 62);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "main"), 41);
    assert_eq!(m.by("svckit_cache_items", "tier", "main"), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_publishes_loads_by_source_and_hits_by_tier_summed_per_group() {
    const GROUP: &str = "metrics_cluster";
    const BUDGET: usize = 4 << 20;
    let getter = TestGetter::default();
    // Every value fetched from a peer is kept hot, so a second get of it hits the hot tier.
    let nodes = named_cluster(&getter, 3, GROUP, BUDGET, 1).await;
    let keys: Vec<String> = (0..60).map(|i| format!("key-{i}")).collect();
    let remote = keys.iter().filter(|k| owner_index(&nodes, k) != 0).count() as u64;
    let local = keys.len() as u64 - remote;
    assert!(remote > 0 && local > 0, "{local} local, {remote} remote");
    // Every key got twice at node 0: the first get loads (here or at the owner, fetched),
    // the second hits (main tier for keys node 0 owns, hot tier for the others).
    for _ in 0..2 {
        for key in &keys {
            assert_eq!(nodes[0].group.get(key).await.unwrap(), value_of(key));
        }
    }
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    let k = 2 * keys.len() as u64;
    // A fetch is a get on its owner too (golang/groupcache counts them alike).
    assert_eq!(m.total("svckit_cache_gets_total"), k + remote);
    assert_eq!(m.total("svckit_cache_peer_requests_served_total"), remote);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "main"), local);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "hot"), remote);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "peer"), remote);
    // Every key was loaded once, by its owner.
    assert_eq!(m.by("svckit_cache_loads_total", "source", "local"), 60);
    assert_eq!(getter.total(), 60);
    // The loads run after merging concurrent misses (there were none to merge): node 0's 60
    // (its own keys loaded, the others fetched), and the owners' loads for node 0's fetches.
    assert_eq!(m.total("svckit_cache_loads_deduped_total"), 60 + remote);
    assert_eq!(m.total("svckit_cache_peer_errors_total"), 0);
    assert_eq!(m.total("svckit_cache_getter_errors_total"), 0);
    // The gauges are the three nodes' stats, summed.
    let s = summed(&nodes);
    assert_eq!(m.by("svckit_cache_items", "tier", "main"), 60);
    assert_eq!(s.main_cache.items, 60);
    assert_eq!(m.by("svckit_cache_items", "tier", "hot"), remote);
    assert_eq!(
        m.by("svckit_cache_bytes", "tier", "main"),
        s.main_cache.bytes
    );
    assert_eq!(m.by("svckit_cache_bytes", "tier", "hot"), s.hot_cache.bytes);
    assert!(s.hot_cache.bytes > 0);
    assert_eq!(m.total("svckit_cache_budget_bytes"), 3 * BUDGET as u64);
    assert_eq!(s.gets, k + remote);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_getter_and_its_peer_errors_are_published_and_not_cached() {
    const GROUP: &str = "metrics_errors";
    let getter = TestGetter::default();
    let nodes = named_cluster(&getter, 3, GROUP, 4 << 20, 0).await;
    let keys: Vec<String> = (0..30).map(|i| format!("err-{i}")).collect();
    let remote = keys.iter().filter(|k| owner_index(&nodes, k) != 0).count() as u64;
    let local = keys.len() as u64 - remote;
    assert!(remote > 0 && local > 0, "{local} local, {remote} remote");
    getter.fail.store(true, Ordering::SeqCst);
    for key in &keys {
        assert!(nodes[0].group.get(key).await.is_err(), "{key}");
    }
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    // A key node 0 owns fails once; a key owned elsewhere fails at its owner (answered 500:
    // a peer error at node 0), then again in node 0's own fallback load.
    assert_eq!(
        m.total("svckit_cache_getter_errors_total"),
        local + 2 * remote
    );
    assert_eq!(m.total("svckit_cache_peer_errors_total"), remote);
    // The owners answered (with an error): no peer was unreachable.
    assert_eq!(
        m.by("svckit_cache_peer_errors_total", "kind", "answered"),
        remote
    );
    assert_eq!(
        m.by("svckit_cache_peer_errors_total", "kind", "unreachable"),
        0
    );
    assert_eq!(m.by("svckit_cache_loads_total", "source", "local"), 0);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "peer"), 0);
    assert_eq!(m.by("svckit_cache_items", "tier", "main"), 0);

    // Errors are not cached: once the origin answers, every key loads, once, at its owner.
    getter.fail.store(false, Ordering::SeqCst);
    for key in &keys {
        assert_eq!(nodes[0].group.get(key).await.unwrap(), value_of(key));
    }
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "local"), 30);
    assert_eq!(m.by("svckit_cache_loads_total", "source", "peer"), remote);
    assert_eq!(m.total("svckit_cache_peer_errors_total"), remote);
    assert_eq!(
        m.total("svckit_cache_getter_errors_total"),
        local + 2 * remote
    );
}

#[tokio::test]
async fn evictions_under_a_small_budget_are_published_with_the_bytes_held() {
    const GROUP: &str = "metrics_evictions";
    const BUDGET: usize = 8 << 10;
    let (_cache, group) = lone(GROUP, BUDGET);
    for i in 0..100 {
        group.get(&format!("e{i}")).await.unwrap();
    }
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    let s = group.stats();
    let items = m.by("svckit_cache_items", "tier", "main");
    let evictions = m.by("svckit_cache_evictions_total", "tier", "main");
    assert_eq!(items, s.main_cache.items);
    assert!(items > 0 && evictions > 0, "{s:?}");
    assert_eq!(
        items + evictions,
        100,
        "every key loaded is held or was evicted"
    );
    let bytes = m.by("svckit_cache_bytes", "tier", "main");
    assert_eq!(bytes, s.main_cache.bytes);
    assert!(bytes <= BUDGET as u64, "{bytes} bytes held");
    assert_eq!(m.total("svckit_cache_budget_bytes"), BUDGET as u64);
    assert_eq!(group.budget_bytes(), BUDGET);
}

#[tokio::test]
async fn a_dropped_node_keeps_its_counts_in_its_group_s_counters() {
    const GROUP: &str = "metrics_dropped";
    let (cache_a, group_a) = lone(GROUP, 1 << 20);
    let (_cache_b, group_b) = lone(GROUP, 1 << 20);
    for g in [&group_a, &group_b] {
        g.get("x").await.unwrap();
        g.get("x").await.unwrap();
    }
    // Not published while both lived: node a's counts reach the counters after its drop.
    drop((cache_a, group_a));
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(m.total("svckit_cache_gets_total"), 4);
    assert_eq!(m.by("svckit_cache_hits_total", "tier", "main"), 2);
    // The gauges are the live node's only.
    assert_eq!(m.by("svckit_cache_items", "tier", "main"), 1);
    assert_eq!(m.total("svckit_cache_budget_bytes"), 1 << 20);
    group_b.get("x").await.unwrap();
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(m.total("svckit_cache_gets_total"), 5);
}

#[tokio::test]
async fn ring_shares_and_groups_describe_the_node() {
    const GROUP: &str = "metrics_status";
    let getter = TestGetter::default();
    let nodes = named_cluster(&getter, 3, GROUP, 2 << 20, 0).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    for n in &nodes {
        let shares = n.cache.ring_shares();
        let peers: Vec<&str> = shares.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(peers, urls, "one entry per peer, in the ring's order");
        let total: f64 = shares.iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-9, "{shares:?}");
        assert!(shares.iter().all(|s| s.1 > 0.0), "{shares:?}");
        assert_eq!(shares, nodes[0].cache.ring_shares(), "every node agrees");
        let groups = n.cache.groups();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name(), GROUP);
        assert_eq!(groups[0].budget_bytes(), 2 << 20);
        assert_eq!(n.cache.self_url(), n.url);
    }
    // The shares are the owners of keys: sampled, they agree within a few percent.
    let shares = nodes[0].cache.ring_shares();
    let n = 20_000;
    let mut owned: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        *owned
            .entry(nodes[0].cache.owner(&format!("s{i}")).unwrap())
            .or_default() += 1;
    }
    for (peer, share) in &shares {
        let sampled = owned[peer] as f64 / n as f64;
        assert!(
            (sampled - share).abs() < 0.02,
            "{peer}: {sampled} sampled, {share} computed"
        );
    }
    assert!(Cache::builder("http://127.0.0.1:1")
        .build()
        .unwrap()
        .ring_shares()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_reached_is_an_unreachable_peer_error() {
    const GROUP: &str = "metrics_unreachable";
    let me = "http://127.0.0.1:9".to_owned();
    let dead = "http://127.0.0.1:1".to_owned();
    let cache = svckit_cache::Cache::builder(&me).build().unwrap();
    let getter = TestGetter::default();
    let group = cache
        .new_group(GROUP, 1 << 20, getter.clone())
        .build()
        .unwrap();
    cache.set_peers([&me, &dead]).unwrap();
    let key = (0..)
        .map(|i| format!("u{i}"))
        .find(|k| cache.owner(k).as_deref() == Some(dead.as_str()))
        .unwrap();
    // Refused: loaded here instead.
    assert_eq!(group.get(&key).await.unwrap(), value_of(&key));
    let scrape = published();
    let m = Family::of(&scrape, GROUP);
    assert_eq!(
        m.by("svckit_cache_peer_errors_total", "kind", "unreachable"),
        1
    );
    assert_eq!(
        m.by("svckit_cache_peer_errors_total", "kind", "answered"),
        0
    );
    assert_eq!(m.by("svckit_cache_loads_total", "source", "local"), 1);
    assert_eq!(group.stats().peer_unreachable, 1);
}
