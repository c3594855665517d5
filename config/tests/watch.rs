//! The typed config watch against a real etcd: transactions seen whole, invalid values
//! refused, etcd killed and restarted, compaction while the watcher was cut off, deleted
//! keys, startup errors, and writes.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, CompactionOptions};
use serde::{Deserialize, Serialize};
use svckit_config::{put, put_if_unchanged, ConfigWatch, Error};
use svckit_registry::{DiscoveryState, EtcdOptions, EtcdRegistry, Keyspace, Registry, Txn};
use svckit_testing::{Etcd, Proxy};
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Product {
    greeting: String,
    price_factor: f64,
    #[serde(default)]
    discount: Option<u32>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

async fn keyspace(endpoint: String) -> Keyspace {
    EtcdRegistry::connect(
        EtcdOptions::new([endpoint])
            .request_timeout(Duration::from_secs(1))
            .dial_timeout(Duration::from_secs(3)),
    )
    .await
    .expect("connect to the test etcd")
    .keyspace()
}

async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn product(greeting: &str, factor: f64) -> Product {
    Product {
        greeting: greeting.into(),
        price_factor: factor,
        discount: None,
        labels: BTreeMap::new(),
    }
}

async fn watch(ks: &Keyspace) -> ConfigWatch<Product> {
    ConfigWatch::<Product>::builder(ks, "/config/product")
        .validate(|p: &Product| {
            if p.price_factor > 0.0 {
                Ok(())
            } else {
                Err(format!("price_factor must be > 0, got {}", p.price_factor))
            }
        })
        .start()
        .await
        .expect("start the config watch")
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_are_seen_whole_and_invalid_values_keep_the_last_good_one() {
    let etcd = Etcd::start();
    let writer = keyspace(etcd.endpoint()).await;
    put(&writer, "/config/product/", &product("hello", 1.0))
        .await
        .unwrap();
    let mut config = watch(&keyspace(etcd.endpoint()).await).await;
    assert_eq!(config.get().greeting, "hello");

    // Greeting and factor change together: every value seen pairs them.
    for round in 1..=30 {
        let revision = writer
            .commit(
                Txn::new()
                    .put("/config/product/greeting", format!("g{round}"))
                    .put("/config/product/price_factor", format!("{round}")),
            )
            .await
            .unwrap();
        loop {
            let seen = config.changed().await.unwrap();
            assert_eq!(
                seen.greeting,
                format!("g{}", seen.price_factor),
                "half a transaction at revision {}",
                seen.revision()
            );
            if seen.revision() >= revision {
                assert_eq!(seen.price_factor, f64::from(round));
                break;
            }
        }
    }

    // A factor that does not parse, then one that fails validation: both refused.
    let good = config.get();
    let bad = writer
        .put("/config/product/price_factor", "cheap")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "refusal recorded", || {
        config.rejected_count() == 1
    })
    .await;
    let rejected = config.last_rejected().unwrap();
    assert_eq!(rejected.revision, bad);
    assert_eq!(
        rejected.key.as_deref(),
        Some("/config/product/price_factor")
    );
    assert!(rejected.reason.contains("cheap"), "{rejected}");
    let negative = writer
        .put("/config/product/price_factor", "-2")
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "second refusal", || {
        config.rejected_count() == 2
    })
    .await;
    let rejected = config.last_rejected().unwrap();
    assert_eq!(rejected.revision, negative);
    assert!(rejected.reason.contains("must be > 0"), "{rejected}");
    // The validation does not know the key; the refusal names what changed since the last
    // good value.
    assert_eq!(
        rejected.key.as_deref(),
        Some("/config/product/price_factor")
    );
    assert_eq!(config.get(), good, "the last good value stays");
    assert!(!config.seen_changed_now(), "no wake-up for a refused value");

    // Fixed: the next good value arrives.
    writer
        .put("/config/product/price_factor", "2.5")
        .await
        .unwrap();
    let next = config.changed().await.unwrap();
    assert_eq!(next.price_factor, 2.5);
    assert_eq!(next.greeting, good.greeting);
}

/// A helper trait so the test reads: whether a `changed()` would return at once.
trait SeenChanged {
    fn seen_changed_now(&mut self) -> bool;
}

impl SeenChanged for ConfigWatch<Product> {
    fn seen_changed_now(&mut self) -> bool {
        use std::future::Future;
        let mut fut = std::pin::pin!(self.changed());
        let waker = std::task::Waker::noop();
        fut.as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_keys_disappear_from_the_value_and_writes_delete_what_is_gone() {
    let etcd = Etcd::start();
    let ks = keyspace(etcd.endpoint()).await;
    let mut full = product("hi", 1.0);
    full.discount = Some(10);
    full.labels.insert("color".into(), "red".into());
    full.labels.insert("size".into(), "xl".into());
    put(&ks, "/config/product", &full).await.unwrap();
    let mut config = watch(&ks).await;
    assert_eq!(**config.get(), full);

    ks.delete("/config/product/discount").await.unwrap();
    let seen = config.changed().await.unwrap();
    assert_eq!(seen.discount, None);

    // Writing a value without a label deletes that label's key, in the same revision.
    let mut less = full.clone();
    less.discount = None;
    less.labels.remove("size");
    let revision = put(&ks, "/config/product", &less).await.unwrap();
    let seen = config.changed().await.unwrap();
    assert_eq!(seen.revision(), revision);
    assert_eq!(**seen, less);
    let keys: Vec<String> = ks
        .get("/config/product/")
        .await
        .unwrap()
        .iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    assert_eq!(
        keys,
        [
            "/config/product/greeting",
            "/config/product/labels/color",
            "/config/product/price_factor"
        ]
    );

    // Compare-and-swap: a write derived from an old revision is refused.
    let stale = seen.revision();
    ks.put("/config/product/greeting", "changed meanwhile")
        .await
        .unwrap();
    let refused = put_if_unchanged(&ks, "/config/product", &full, stale).await;
    assert!(
        matches!(
            &refused,
            Err(Error::Registry {
                source: svckit_registry::Error::Conflict { .. },
                ..
            })
        ),
        "{refused:?}"
    );
    let now = config.changed().await.unwrap();
    assert_eq!(now.greeting, "changed meanwhile");
    put_if_unchanged(&ks, "/config/product", &full, now.revision())
        .await
        .unwrap();
    assert_eq!(**config.changed().await.unwrap(), full);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_killed_and_restarted_keeps_the_last_good_value_then_the_latest() {
    let mut etcd = Etcd::start();
    let ks = keyspace(etcd.endpoint()).await;
    put(&ks, "/config/product", &product("before", 1.0))
        .await
        .unwrap();
    let mut config = watch(&ks).await;

    etcd.stop();
    eventually(Duration::from_secs(10), "watch notices", || {
        config.state() == DiscoveryState::Reconnecting
    })
    .await;
    // Served throughout the outage.
    for _ in 0..20 {
        assert_eq!(config.get().greeting, "before");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    etcd.restart();
    etcd.wait_healthy(Duration::from_secs(10));
    let writer = keyspace(etcd.endpoint()).await;
    writer
        .put("/config/product/greeting", "after")
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(15), config.changed())
        .await
        .expect("the value after the restart")
        .unwrap();
    assert_eq!(seen.greeting, "after");
    assert_eq!(config.state(), DiscoveryState::Live);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compaction_while_cut_off_ends_with_the_right_value() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.addr()).await;
    let writer = keyspace(etcd.endpoint()).await;
    put(&writer, "/config/product", &product("v0", 1.0))
        .await
        .unwrap();
    let config = watch(&keyspace(format!("http://{}", proxy.addr())).await).await;

    proxy.cut();
    eventually(Duration::from_secs(10), "watch notices", || {
        config.state() == DiscoveryState::Reconnecting
    })
    .await;
    for i in 1..=20 {
        writer
            .put("/config/product/greeting", format!("v{i}"))
            .await
            .unwrap();
    }
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    let revision = writer.get("/config/").await.unwrap().revision();
    raw.compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(config.get().greeting, "v0", "still the stale value");

    proxy.heal();
    eventually(Duration::from_secs(15), "the final value", || {
        config.get().greeting == "v20"
    })
    .await;
    assert_eq!(config.get().revision(), revision);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_invalid_config_at_start_is_an_error_or_the_given_default() {
    let etcd = Etcd::start();
    let ks = keyspace(etcd.endpoint()).await;

    let missing = ConfigWatch::<Product>::start(&ks, "/config/none/").await;
    let Err(Error::Rejected(rejected)) = &missing else {
        panic!("expected a refusal, got {missing:?}");
    };
    assert!(rejected.reason.contains("greeting"), "{rejected}");

    ks.put("/config/bad/greeting", "x").await.unwrap();
    ks.put("/config/bad/price_factor", "NaN-ish").await.unwrap();
    let config = ConfigWatch::<Product>::builder(&ks, "/config/bad/")
        .default_value(product("default", 1.0))
        .start()
        .await
        .unwrap();
    assert_eq!(config.get().greeting, "default");
    assert_eq!(
        config.last_rejected().unwrap().key.as_deref(),
        Some("/config/bad/price_factor")
    );

    // etcd unreachable before the first listing: a clear error after the startup timeout.
    let proxy = Proxy::start(etcd.addr()).await;
    let cut_off = keyspace(format!("http://{}", proxy.addr())).await;
    proxy.cut();
    let unavailable = ConfigWatch::<Product>::builder(&cut_off, "/config/bad/")
        .startup_timeout(Duration::from_millis(500))
        .start()
        .await;
    assert!(
        matches!(unavailable, Err(Error::Unavailable { .. })),
        "{unavailable:?}"
    );
}
