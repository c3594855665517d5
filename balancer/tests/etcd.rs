//! The scenarios end to end: HTTP servers on loopback registered in a real etcd,
//! clients calling them by name through the registry's shared discovery view.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;
use svckit_balancer::{ConsistentHash, Error, HttpClient, P2c, Picker, Random, RetryPolicy};
use svckit_registry::{Discovery, EtcdOptions, EtcdRegistry, Registration, Registry};
use svckit_testing::Etcd;

/// etcd, a registry client, the servers and their registrations.
struct Cluster {
    servers: Vec<TestServer>,
    registrations: Vec<Option<Registration>>,
    discovery: Discovery,
    _registry: EtcdRegistry,
    _etcd: Etcd,
}

impl Cluster {
    async fn start(servers: Vec<TestServer>) -> Self {
        let etcd = tokio::task::spawn_blocking(Etcd::start).await.unwrap();
        let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
            .await
            .unwrap();
        let mut registrations = Vec::new();
        for s in &servers {
            registrations.push(Some(registry.register(s.instance()).await.unwrap()));
        }
        let discovery = registry.discovery();
        wait_for(&discovery, servers.len()).await;
        Self {
            servers,
            registrations,
            discovery,
            _registry: registry,
            _etcd: etcd,
        }
    }

    async fn deregister(&mut self, i: usize) {
        let reg = self.registrations[i].take().unwrap();
        reg.deregister().await.unwrap();
        wait_for(&self.discovery, self.servers.len() - 1).await;
    }
}

/// Waits until discovery shows `n` instances of the service.
async fn wait_for(discovery: &Discovery, n: usize) {
    let mut watch = discovery.watch(SERVICE).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while watch.mark_seen().len() != n {
            watch.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("discovery did not show {n} instances"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_gives_each_of_three_25_to_42_percent() {
    let c = Cluster::start(servers(3, Duration::ZERO).await).await;
    let ep = builder(&HttpClient::new(), &c.discovery)
        .picker(Picker::Random(Random::from_seed(11)))
        .build()
        .unwrap();
    let t = tally(&run(&ep, 3000, 32, |_| Call::get("/id")).await);
    for s in &c.servers {
        let share = t.get(&s.id).copied().unwrap_or(0) as f64 / 3000.0;
        assert!((0.25..=0.42).contains(&share), "{}: {share} ({t:?})", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_cycles_exactly() {
    let c = Cluster::start(servers(3, Duration::ZERO).await).await;
    let ep = builder(&HttpClient::new(), &c.discovery)
        .picker(Picker::by_name("round_robin").unwrap())
        .build()
        .unwrap();
    let got: Vec<String> = run(&ep, 30, 1, |_| Call::get("/id"))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<String> = (0..30).map(|k| format!("s{}", k % 3)).collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_only_the_deregistered_instances_keys() {
    let mut c = Cluster::start(servers(3, Duration::ZERO).await).await;
    let ep = builder(&HttpClient::new(), &c.discovery)
        .picker(Picker::ConsistentHash(ConsistentHash::new()))
        .hash_key(|call: &Call| call.key.clone())
        .build()
        .unwrap();
    let owners = |results: Vec<Result<String, Error>>| -> Vec<String> {
        results.into_iter().map(Result::unwrap).collect()
    };
    let before = owners(run(&ep, 600, 16, |i| Call::keyed(format!("user{i}"))).await);
    let again = owners(run(&ep, 600, 16, |i| Call::keyed(format!("user{i}"))).await);
    assert_eq!(
        before, again,
        "the same key always reaches the same instance"
    );
    let counts = before
        .iter()
        .fold(HashMap::<&str, usize>::new(), |mut m, id| {
            *m.entry(id).or_default() += 1;
            m
        });
    assert_eq!(counts.len(), 3, "{counts:?}");

    c.deregister(1).await; // s1 leaves
    let after = owners(run(&ep, 600, 16, |i| Call::keyed(format!("user{i}"))).await);
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if b == "s1" {
            assert_ne!(a, "s1", "user{i} still reaches the deregistered instance");
        } else {
            assert_eq!(b, a, "user{i} moved although its owner stayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_under_10_percent_to_a_20x_slower_instance() {
    // 50 ms against 1 s: slow enough that a loaded machine's queueing does not shrink the
    // 20x between them.
    let mut servers = servers(2, Duration::from_millis(50)).await;
    servers.push(TestServer::start("slow", Duration::from_secs(1)).await);
    let c = Cluster::start(servers).await;
    let ep = builder(&HttpClient::new(), &c.discovery)
        .picker(Picker::P2c(P2c::from_seed(5)))
        .build()
        .unwrap();
    let t = tally(&run(&ep, 3000, 64, |_| Call::get("/id")).await);
    assert!(!t.contains_key("error"), "{t:?}");
    let slow = t.get("slow").copied().unwrap_or(0);
    assert!(slow < 300, "slow instance got {slow} of 3000: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_loses_no_call_when_a_server_is_killed_mid_run() {
    let c = Cluster::start(servers(3, Duration::from_millis(1)).await).await;
    let ep = builder(&HttpClient::new(), &c.discovery)
        .picker(Picker::Random(Random::from_seed(3)))
        .retry(RetryPolicy::new(3, Duration::from_secs(5)))
        .build()
        .unwrap();
    let victim = &c.servers[0];
    // The victim dies without deregistering: its key stays in etcd until the lease expires.
    let (results, ()) = tokio::join!(run(&ep, 1000, 16, |_| Call::get("/id")), async {
        while victim.hits() < 100 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        victim.kill();
    });
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        c.discovery.instances(SERVICE).len(),
        3,
        "the victim is still registered"
    );
    let t = tally(&results);
    assert!(t["s0"] >= 90 && t["s0"] < 500, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instances_comes_back_within_the_deadline() {
    let c = Cluster::start(servers(1, Duration::ZERO).await).await;
    let ep = HttpClient::new()
        .endpoint(&c.discovery, "ghost", encode, decode)
        .retry(RetryPolicy::new(3, Duration::from_secs(2)))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = ep.invoke(Call::get("/id")).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, Error::NoInstances { service } if service == "ghost"),
        "{err:?}"
    );
}
