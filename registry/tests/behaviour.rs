//! One behaviour suite, run against both backends: the in-memory registry and a real etcd.

use std::time::Duration;

use futures_util::StreamExt;
use svckit_registry::{
    DiscoveryState, Error, EtcdOptions, EtcdRegistry, Instance, Instances, KeySnapshot,
    MemoryRegistry, Registry, Txn,
};
use tokio::time::Instant;
use tower::discover::Change;

const TTL: Duration = Duration::from_secs(2);

/// A backend that hands out registry clients sharing one store.
trait Backend {
    type R: Registry + Clone;
    async fn client(&self) -> Self::R;
}

struct Memory(MemoryRegistry);

impl Backend for Memory {
    type R = MemoryRegistry;
    async fn client(&self) -> MemoryRegistry {
        self.0.client(TTL)
    }
}

struct Etcd(svckit_testing::Etcd);

impl Backend for Etcd {
    type R = EtcdRegistry;
    async fn client(&self) -> EtcdRegistry {
        EtcdRegistry::connect(
            EtcdOptions::new([self.0.endpoint()])
                .ttl(TTL)
                .request_timeout(Duration::from_secs(1)),
        )
        .await
        .expect("connect to the test etcd")
    }
}

fn inst(id: &str, name: &str, port: u16) -> Instance {
    Instance::new(id, name, format!("127.0.0.1:{port}")).unwrap()
}

fn ids(instances: &Instances) -> Vec<&str> {
    instances.iter().map(Instance::id).collect()
}

/// Polls `cond` every 10 ms until it holds; returns how long that took, or panics after `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

async fn register_discover_deregister<B: Backend>(backend: &B) {
    let server = backend.client().await;
    let client = backend.client().await;
    let mut watch = client.discovery().watch("products").unwrap();
    assert!(watch.snapshot().is_empty());

    let a = server.register(inst("a", "products", 1)).await.unwrap();
    let now = tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ids(&now), ["a"]);
    assert_eq!(now.iter().next().unwrap().addr(), "127.0.0.1:1");

    let b = server.register(inst("b", "products", 2)).await.unwrap();
    eventually(Duration::from_secs(5), "b visible", || {
        watch.snapshot().len() == 2
    })
    .await;

    a.deregister().await.unwrap();
    eventually(Duration::from_secs(5), "a gone", || {
        ids(&watch.snapshot()) == ["b"]
    })
    .await;
    b.deregister().await.unwrap();
    eventually(Duration::from_secs(5), "b gone", || {
        watch.snapshot().is_empty()
    })
    .await;
    assert_eq!(client.discovery().stats().malformed_skipped, 0);
}

async fn expiry_without_keepalive<B: Backend>(backend: &B) {
    let server = backend.client().await;
    let client = backend.client().await;
    let discovery = client.discovery();
    let reg = server
        .register(inst("dropped", "products", 1))
        .await
        .unwrap();
    assert_eq!(reg.ttl(), TTL);
    eventually(Duration::from_secs(5), "registered", || {
        discovery.instances("products").len() == 1
    })
    .await;
    // Dropping the handle stops the keepalive; the key must expire with its lease.
    drop(reg);
    let took = eventually(TTL + Duration::from_secs(2), "expired", || {
        discovery.instances("products").is_empty()
    })
    .await;
    // It lived on for a while: it was not deleted, it expired.
    assert!(took >= Duration::from_millis(500), "gone after {took:?}");
}

async fn events_arrive_in_order<B: Backend>(backend: &B) {
    let server = backend.client().await;
    let client = backend.client().await;
    let mut changes = client
        .discovery()
        .discover("orders", |i: &Instance| i.addr().to_owned())
        .unwrap();
    async fn next<
        S: futures_util::Stream<Item = Result<Change<String, String>, std::convert::Infallible>>
            + Unpin,
    >(
        changes: &mut S,
    ) -> String {
        match tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await
            .expect("a change within 5 s")
            .unwrap()
            .unwrap()
        {
            Change::Insert(id, addr) => format!("+{id}@{addr}"),
            Change::Remove(id) => format!("-{id}"),
        }
    }
    let a = server.register(inst("a", "orders", 1)).await.unwrap();
    assert_eq!(next(&mut changes).await, "+a@127.0.0.1:1");
    let b = server.register(inst("b", "orders", 2)).await.unwrap();
    assert_eq!(next(&mut changes).await, "+b@127.0.0.1:2");
    a.deregister().await.unwrap();
    assert_eq!(next(&mut changes).await, "-a");
    let c = server.register(inst("c", "orders", 3)).await.unwrap();
    assert_eq!(next(&mut changes).await, "+c@127.0.0.1:3");
    b.deregister().await.unwrap();
    assert_eq!(next(&mut changes).await, "-b");

    // A burst: the view must end in the state of the last write for every key.
    let mut kept = Vec::new();
    for i in 0..20u16 {
        let r = server
            .register(inst(&format!("burst{i:02}"), "orders", 100 + i))
            .await
            .unwrap();
        if i % 2 == 0 {
            r.deregister().await.unwrap();
        } else {
            kept.push(r);
        }
    }
    let discovery = client.discovery();
    let mut want: Vec<String> = (0..20u16)
        .filter(|i| i % 2 == 1)
        .map(|i| format!("burst{i:02}"))
        .collect();
    want.push("c".into());
    want.sort();
    // Intermediate states can have the same size (burst18 still there, burst19 not yet), so
    // wait for the final state itself; a view that never reaches it fails here.
    eventually(Duration::from_secs(5), "burst settled", || {
        ids(&discovery.instances("orders")) == want
    })
    .await;
    // And it stays there: no late event undoes it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ids(&discovery.instances("orders")), want);
    drop(c);
    drop(kept);
}

async fn three_names_one_view<B: Backend>(backend: &B) {
    let server = backend.client().await;
    let client = backend.client().await;
    let discovery = client.discovery();
    let mut regs = Vec::new();
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        for j in 0..=i {
            let port = u16::try_from(10 * i + j).unwrap();
            regs.push(
                server
                    .register(inst(&format!("{name}{j}"), name, port))
                    .await
                    .unwrap(),
            );
        }
    }
    eventually(Duration::from_secs(5), "all visible", || {
        discovery.all().len() == 6
    })
    .await;
    assert_eq!(discovery.instances("alpha").len(), 1);
    assert_eq!(discovery.instances("beta").len(), 2);
    assert_eq!(discovery.instances("gamma").len(), 3);
    // One view, one listing: the initial one.
    assert_eq!(discovery.stats().relists, 1);
    for r in regs {
        r.deregister().await.unwrap();
    }
}

fn keys(snapshot: &KeySnapshot) -> Vec<(String, String)> {
    snapshot
        .iter()
        .map(|(k, v)| (k.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// A transaction of several keys is seen whole by a prefix watch: never a part of it.
async fn keyspace_transaction_is_seen_whole<B: Backend>(backend: &B) {
    let writer = backend.client().await.keyspace();
    let reader = backend.client().await.keyspace();
    let mut watch = reader.watch("/cfg/txn/").unwrap();
    eventually(Duration::from_secs(5), "listed", || {
        watch.state() == DiscoveryState::Live
    })
    .await;
    watch.mark_seen();
    for round in 0..20 {
        let txn = (0..5).fold(Txn::new(), |t, i| {
            t.put(format!("/cfg/txn/k{i}"), format!("{round}"))
        });
        let revision = writer.commit(txn).await.unwrap();
        loop {
            let seen = watch.changed().await.unwrap();
            let values: Vec<String> = keys(&seen).into_iter().map(|(_, v)| v).collect();
            assert_eq!(values.len(), 5, "round {round}: {values:?}");
            assert!(
                values.iter().all(|v| *v == values[0]),
                "round {round}: half a transaction seen: {values:?}"
            );
            if seen.revision() >= revision {
                assert_eq!(values[0], round.to_string());
                break;
            }
        }
    }
}

/// Puts, deletes and prefix deletes reach every watch; two watches of one prefix share one.
async fn keyspace_watch_follows_puts_and_deletes<B: Backend>(backend: &B) {
    let writer = backend.client().await.keyspace();
    let reader = backend.client().await.keyspace();
    let a = reader.watch("/cfg/app/").unwrap();
    let b = reader.watch("/cfg/app/").unwrap();
    assert!(format!("{reader:?}").contains("watches: 1"), "{reader:?}");
    writer.put("/cfg/app/name", "x").await.unwrap();
    writer.put("/cfg/app/db/user", "u").await.unwrap();
    writer.put("/cfg/other/name", "not mine").await.unwrap();
    eventually(Duration::from_secs(5), "puts seen", || {
        a.snapshot().len() == 2
    })
    .await;
    assert_eq!(a.snapshot().get("/cfg/app/db/user"), Some(&b"u"[..]));
    writer.delete("/cfg/app/name").await.unwrap();
    eventually(Duration::from_secs(5), "delete seen", || {
        b.snapshot().get("/cfg/app/name").is_none()
    })
    .await;
    let last = writer
        .commit(Txn::new().delete_prefix("/cfg/app/db/"))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "prefix delete seen", || {
        a.snapshot().is_empty() && a.snapshot().revision() >= last
    })
    .await;
    // A one-off get agrees.
    let got = reader.get("/cfg/").await.unwrap();
    assert_eq!(
        keys(&got),
        [("/cfg/other/name".to_owned(), "not mine".to_owned())]
    );
    assert!(matches!(
        reader.watch("cfg"),
        Err(Error::InvalidPrefix { .. })
    ));
}

/// `if_unchanged_since` is a compare-and-swap on the prefix.
async fn keyspace_compare_and_swap<B: Backend>(backend: &B) {
    let ks = backend.client().await.keyspace();
    ks.put("/cfg/cas/a", "1").await.unwrap();
    let seen = ks.get("/cfg/cas/").await.unwrap().revision();
    ks.put("/cfg/cas/a", "2").await.unwrap();
    let refused = ks
        .commit(
            Txn::new()
                .put("/cfg/cas/a", "3")
                .if_unchanged_since("/cfg/cas/", seen),
        )
        .await;
    assert!(
        matches!(&refused, Err(Error::Conflict { expected, .. }) if *expected == seen),
        "{refused:?}"
    );
    assert_eq!(
        ks.get("/cfg/cas/").await.unwrap().get("/cfg/cas/a"),
        Some(&b"2"[..])
    );
    let now = ks.get("/cfg/cas/").await.unwrap().revision();
    ks.commit(
        Txn::new()
            .put("/cfg/cas/a", "3")
            .if_unchanged_since("/cfg/cas/", now),
    )
    .await
    .unwrap();
    assert_eq!(
        ks.get("/cfg/cas/").await.unwrap().get("/cfg/cas/a"),
        Some(&b"3"[..])
    );
}

macro_rules! suite {
    ($backend:ident, $make:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() {
                    let backend = $make;
                    super::$test(&backend).await;
                }
            )*
        }
    };
}

suite!(
    memory,
    super::Memory(svckit_registry::MemoryRegistry::with_ttl(super::TTL)),
    [
        register_discover_deregister,
        expiry_without_keepalive,
        events_arrive_in_order,
        three_names_one_view,
        keyspace_transaction_is_seen_whole,
        keyspace_watch_follows_puts_and_deletes,
        keyspace_compare_and_swap,
    ]
);

suite!(
    etcd,
    super::Etcd(svckit_testing::Etcd::start()),
    [
        register_discover_deregister,
        expiry_without_keepalive,
        events_arrive_in_order,
        three_names_one_view,
        keyspace_transaction_is_seen_whole,
        keyspace_watch_follows_puts_and_deletes,
        keyspace_compare_and_swap,
    ]
);
