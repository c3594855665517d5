//! The etcd backend against a real etcd: key layout, leases, recovery, discovery faults.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, CompactionOptions, GetOptions, LeaseTimeToLiveOptions};
use svckit_registry::{
    DiscoveryState, Error, EtcdOptions, EtcdRegistry, Instance, Lifecycle, RegistrationState,
    Registry,
};
use svckit_testing::{Etcd, Proxy};

use tokio::time::Instant;

fn options(endpoint: String, ttl: Duration) -> EtcdOptions {
    EtcdOptions::new([endpoint])
        .ttl(ttl)
        .dial_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1))
}

async fn connect(endpoint: String, ttl: Duration) -> EtcdRegistry {
    EtcdRegistry::connect(options(endpoint, ttl)).await.unwrap()
}

async fn raw(etcd: &Etcd) -> Client {
    Client::connect([etcd.endpoint()], None).await.unwrap()
}

/// The value and lease of `key`, if present.
async fn get(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(key, None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| (kv.value_str().unwrap().to_owned(), kv.lease()))
}

async fn eventually<F, Fut>(limit: Duration, what: &str, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_puts_the_address_with_a_lease_of_the_configured_ttl() {
    let etcd = Etcd::start();
    let registry = connect(etcd.endpoint(), Duration::from_secs(7)).await;
    let reg = registry
        .register(Instance::with_random_id("productservice", "127.0.0.1:8081").unwrap())
        .await
        .unwrap();
    assert_eq!(reg.state(), RegistrationState::Registered);
    let key = reg.key().to_owned();
    assert_eq!(
        key,
        format!("/services/{}/productservice", reg.instance().id())
    );

    let mut c = raw(&etcd).await;
    let (value, lease) = get(&mut c, &key).await.expect("key present");
    assert_eq!(value, "127.0.0.1:8081");
    assert_ne!(lease, 0, "the key hangs on a lease");
    let ttl = c
        .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), 7);
    assert_eq!(ttl.keys(), [key.as_bytes().to_vec()]);

    // What `etcdctl get /services --prefix` shows, parsed as a Go client would.
    let all = c
        .get("/services", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let parsed: Vec<(String, String)> = all
        .kvs()
        .iter()
        .filter_map(|kv| {
            let k = kv.key_str().ok()?.strip_prefix("/services/")?;
            let (id, name) = k.split_once('/')?;
            let word = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            (word(id) && word(name)).then(|| (name.to_owned(), kv.value_str().unwrap().to_owned()))
        })
        .collect();
    assert_eq!(
        parsed,
        [("productservice".to_owned(), "127.0.0.1:8081".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deregister_removes_the_key_at_once() {
    let etcd = Etcd::start();
    let registry = connect(etcd.endpoint(), Duration::from_secs(10)).await;
    let reg = registry
        .register(Instance::new("id1", "svc", "127.0.0.1:1").unwrap())
        .await
        .unwrap();
    let key = reg.key().to_owned();
    let mut c = raw(&etcd).await;
    assert!(get(&mut c, &key).await.is_some());
    reg.deregister().await.unwrap();
    // No waiting: the lease is revoked, not left to expire.
    assert_eq!(get(&mut c, &key).await, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_revoked_from_outside_is_recovered_within_two_seconds() {
    let etcd = Etcd::start();
    // A long TTL: recovery must not wait for the next keepalive (every TTL/3 = 3.3 s).
    let registry = connect(etcd.endpoint(), Duration::from_secs(10)).await;
    let reg = registry
        .register(Instance::new("revoked", "svc", "127.0.0.1:2").unwrap())
        .await
        .unwrap();
    let key = reg.key().to_owned();
    let mut c = raw(&etcd).await;
    let (_, lease) = get(&mut c, &key).await.unwrap();
    c.lease_revoke(lease).await.unwrap();
    let revoked_at = Instant::now();
    let took = eventually(Duration::from_secs(2), "key back", || {
        let mut c = c.clone();
        let key = key.clone();
        async move { get(&mut c, &key).await.is_some_and(|(_, l)| l != lease) }
    })
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2),
        "took {took:?}"
    );
    assert_eq!(get(&mut c, &key).await.unwrap().0, "127.0.0.1:2");
    eventually(Duration::from_secs(1), "state registered", || async {
        reg.state() == RegistrationState::Registered
    })
    .await;
    assert_eq!(reg.recoveries(), 1);
    reg.deregister().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_longer_than_the_ttl_recovers_and_discovery_keeps_the_last_set() {
    let ttl = Duration::from_secs(2);
    let mut etcd = Etcd::start();
    let server = connect(etcd.endpoint(), ttl).await;
    let client = connect(etcd.endpoint(), ttl).await;
    let discovery = client.discovery();
    let reg = server
        .register(Instance::new("survivor", "svc", "127.0.0.1:3").unwrap())
        .await
        .unwrap();
    let key = reg.key().to_owned();
    eventually(Duration::from_secs(5), "discovered", || async {
        discovery.instances("svc").len() == 1 && discovery.state() == DiscoveryState::Live
    })
    .await;

    let states = Arc::new(Mutex::new(Vec::new()));
    let mut watch = reg.state_watch();
    let recorder = {
        let states = states.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let s = *watch.borrow_and_update();
                states.lock().unwrap().push(s);
            }
        })
    };

    // Taken before the kill: the process's last keepalive was no later than this.
    let stopped = Instant::now();
    tokio::task::block_in_place(|| etcd.stop());
    eventually(ttl + Duration::from_secs(3), "recovering", || async {
        reg.state() == RegistrationState::Recovering
    })
    .await;
    // Lost only once no keepalive succeeded for a whole TTL.
    assert!(
        stopped.elapsed() >= ttl - Duration::from_millis(700),
        "{:?}",
        stopped.elapsed()
    );
    tokio::time::sleep(ttl.saturating_sub(stopped.elapsed()) + Duration::from_millis(500)).await;
    // Never turn an outage into "no instances".
    assert_eq!(discovery.state(), DiscoveryState::Reconnecting);
    assert_eq!(discovery.instances("svc").len(), 1);

    tokio::task::block_in_place(|| etcd.restart());
    let restarted = Instant::now();
    let mut c = raw(&etcd).await;
    eventually(ttl + Duration::from_secs(2), "key back", || {
        let mut c = c.clone();
        let key = key.clone();
        async move { get(&mut c, &key).await.is_some() }
    })
    .await;
    eventually(ttl + Duration::from_secs(2), "registered again", || async {
        reg.state() == RegistrationState::Registered
    })
    .await;
    assert!(restarted.elapsed() <= ttl + Duration::from_secs(2));
    assert_eq!(get(&mut c, &key).await.unwrap().0, "127.0.0.1:3");
    assert_eq!(
        states.lock().unwrap().as_slice(),
        [RegistrationState::Recovering, RegistrationState::Registered]
    );
    assert!(reg.recoveries() >= 1);
    eventually(Duration::from_secs(10), "discovery live again", || async {
        discovery.state() == DiscoveryState::Live
    })
    .await;
    assert_eq!(discovery.instances("svc").len(), 1);
    reg.deregister().await.unwrap();
    recorder.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_compaction_the_watcher_missed_the_view_equals_etcd() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint()).await;
    let server = connect(etcd.endpoint(), Duration::from_secs(10)).await;
    let watcher = connect(proxy.addr().to_string(), Duration::from_secs(10)).await;
    let discovery = watcher.discovery();

    let a = server
        .register(Instance::new("a", "svc", "127.0.0.1:1").unwrap())
        .await
        .unwrap();
    let _b = server
        .register(Instance::new("b", "svc", "127.0.0.1:2").unwrap())
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "a and b seen", || async {
        discovery.instances("svc").len() == 2
    })
    .await;

    proxy.cut();
    eventually(Duration::from_secs(5), "watcher notices", || async {
        discovery.state() == DiscoveryState::Reconnecting
    })
    .await;
    // Changes the watcher cannot see, then compact them away.
    a.deregister().await.unwrap();
    let _c = server
        .register(Instance::new("c", "svc", "127.0.0.1:3").unwrap())
        .await
        .unwrap();
    let _d = server
        .register(Instance::new("d", "other", "127.0.0.1:4").unwrap())
        .await
        .unwrap();
    let mut c = raw(&etcd).await;
    let rev = c
        .get("/services/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(discovery.instances("svc").len(), 2, "still the stale view");

    proxy.heal();
    eventually(Duration::from_secs(10), "view equals etcd", || async {
        let ids: Vec<String> = discovery.all().iter().map(|i| i.id().to_owned()).collect();
        ids == ["b", "c", "d"] && discovery.state() == DiscoveryState::Live
    })
    .await;
    assert!(
        discovery.stats().compactions >= 1,
        "{:?}",
        discovery.stats()
    );
    // The same set etcd has.
    let listing = c
        .get("/services/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let in_etcd: Vec<Instance> = listing
        .kvs()
        .iter()
        .map(|kv| Instance::from_entry("/services", kv.key(), kv.value()).unwrap())
        .collect();
    assert_eq!(discovery.all(), in_etcd);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_entries_are_skipped_and_counted() {
    let etcd = Etcd::start();
    let mut c = raw(&etcd).await;
    for (k, v) in [
        (&b"/services/x"[..], &b"127.0.0.1:1"[..]),
        (b"/services/a/b/c", b"127.0.0.1:1"),
        (b"/services/a-b/c", b"127.0.0.1:1"),
        (b"/services/nonutf8/svc", b"\xff\xfe"),
        (b"/services/empty/svc", b""),
        (b"/services2/other/svc", b"127.0.0.1:9"), // not under `/services/`: not ours at all
        (b"/services/ok/svc", b"127.0.0.1:1"),
    ] {
        c.put(k, v, None).await.unwrap();
    }
    let registry = connect(etcd.endpoint(), Duration::from_secs(10)).await;
    let discovery = registry.discovery();
    let mut svc = discovery.watch("svc").unwrap();
    eventually(Duration::from_secs(5), "listed", || async {
        discovery.state() == DiscoveryState::Live
    })
    .await;
    assert_eq!(discovery.stats().malformed_skipped, 5);
    assert_eq!(
        svc.mark_seen().iter().map(|i| i.id()).collect::<Vec<_>>(),
        ["ok"]
    );

    // Through the watch as well; a valid key turning malformed drops out of the view.
    c.put("/services/ok/svc", "", None).await.unwrap();
    let now = tokio::time::timeout(Duration::from_secs(5), svc.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(now.is_empty());
    c.put("/services/x/y/z", "127.0.0.1:1", None).await.unwrap();
    eventually(Duration::from_secs(5), "counted", || async {
        discovery.stats().malformed_skipped == 7
    })
    .await;
    assert_eq!(discovery.all().len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_and_prefixes_are_refused() {
    let etcd = Etcd::start();
    for bad in ["", "a-b", "a/b", "a b", "prodütservice"] {
        let err = Instance::with_random_id(bad, "127.0.0.1:1").unwrap_err();
        assert!(
            matches!(&err, Error::InvalidIdent { what: "name", value } if value == bad),
            "{err}"
        );
    }
    let registry = connect(etcd.endpoint(), Duration::from_secs(10)).await;
    assert!(matches!(
        registry.discovery().watch("a/b"),
        Err(Error::InvalidIdent { .. })
    ));
    let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let err = Lifecycle::builder("bad-name")
        .handle_signals(false)
        .register(&registry, bound)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidIdent { what: "name", .. }),
        "{err}"
    );
    let err = Lifecycle::builder("svc")
        .handle_signals(false)
        .register(&registry, "0.0.0.0:8080".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnspecifiedAddress { .. }), "{err}");
    for bad in ["services", "", "/"] {
        let err =
            EtcdRegistry::connect(options(etcd.endpoint(), Duration::from_secs(1)).prefix(bad))
                .await
                .unwrap_err();
        assert!(matches!(err, Error::InvalidPrefix { .. }), "{err}");
    }
    // Nothing was written.
    let mut c = raw(&etcd).await;
    let all = c
        .get("/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_to_a_dead_endpoint_fails_within_the_dial_timeout() {
    let port = svckit_testing::free_port();
    let started = Instant::now();
    let err = EtcdRegistry::connect(
        EtcdOptions::new([format!("127.0.0.1:{port}")]).dial_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::Timeout { .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// etcd-client spreads requests over every endpoint: with one that refuses connections in
/// the list, about every other request used to fail. Each is now retried on another one.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_in_the_list_fails_no_connect_register_discover_or_deregister() {
    let etcd = Etcd::start();
    let dead = format!("127.0.0.1:{}", svckit_testing::free_port());
    let mut raw = raw(&etcd).await;
    let started = Instant::now();
    for round in 0..20 {
        // The dead endpoint first and last, so that both orders are tried.
        let endpoints = if round % 2 == 0 {
            [dead.clone(), etcd.endpoint()]
        } else {
            [etcd.endpoint(), dead.clone()]
        };
        let options = EtcdOptions::new(endpoints)
            .ttl(Duration::from_secs(5))
            .dial_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(2));
        let registry = EtcdRegistry::connect(options)
            .await
            .unwrap_or_else(|e| panic!("round {round}: connect: {e}"));
        let name = format!("dead_member_{round}");
        let mut watch = registry.discovery().watch(&name).unwrap();
        let registration = registry
            .register(Instance::with_random_id(&name, "127.0.0.1:9").unwrap())
            .await
            .unwrap_or_else(|e| panic!("round {round}: register: {e}"));
        let key = registration.key().to_owned();
        tokio::time::timeout(Duration::from_secs(5), async {
            while watch.snapshot().is_empty() {
                watch.changed().await.unwrap();
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: not discovered"));
        registration
            .deregister()
            .await
            .unwrap_or_else(|e| panic!("round {round}: deregister: {e}"));
        assert!(
            get(&mut raw, &key).await.is_none(),
            "round {round}: key left"
        );
    }
    println!(
        "FAULT scenario=dead_endpoint_in_list rounds=20 failed=0 took_ms={}",
        started.elapsed().as_millis()
    );
}
