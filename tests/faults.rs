//! The fault suite: a real etcd (one server, or a three-member cluster on loopback), the
//! `product` example as child processes, real SIGKILL and SIGTERM, and load through the
//! library's own Endpoint (p2c, retry) so that every failed call is counted.
//!
//! Run with: `cargo build --examples && cargo test --test faults`
//!
//! Each scenario prints one line to stderr, captured or not:
//! `FAULT scenario=<name> load=… calls=… failed=… recovery_ms=… …`; RELIABILITY.md records
//! them. The harness runs two scenarios at a time on the 2-core machine, so the load is paced
//! (see `support::WORKERS`) and every phase is a few seconds, except the 30 s etcd outage.

#[path = "faults/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions};
use support::{
    blocking, discovery, ids, load_fields, ms, options, poll_until, report, run_for_calls,
    start_load, three_products_discovered, view, wait_for, wait_for_async, Observer, Product,
};
use svckit::registry::{DiscoveryState, EtcdRegistry, Instance, Registry};
use svckit_testing::{Etcd, EtcdCluster};

/// An error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        line.push_str(": ");
        line.push_str(&s.to_string());
        source = s.source();
    }
    line
}

/// Three members; the leader is SIGKILLed while calls flow. The calls go on without a failure
/// and every instance's key stays (or is re-registered within its TTL).
#[tokio::test(flavor = "multi_thread")]
async fn cluster_leader_sigkilled_under_load() {
    const SCENARIO: &str = "leader_killed";
    const TTL: u64 = 5;
    let mut cluster = blocking(|| EtcdCluster::start(3));
    let endpoints = cluster.endpoints();
    let leader = blocking(|| cluster.wait_leader(Duration::from_secs(10)));
    // Reads the keys from a member that survives.
    let observer = Observer::connect(&cluster.endpoint((leader + 1) % 3)).await;
    let (products, _client, discovery) =
        three_products_discovered(&endpoints, ["lk_a", "lk_b", "lk_c"], TTL).await;
    let before = observer.keys().await.expect("the observer reads the keys");

    let load = start_load(&discovery);
    run_for_calls(&load, 200).await;
    let killed = Instant::now();
    blocking(|| cluster.stop(leader));
    let next = blocking(|| cluster.wait_leader(Duration::from_secs(40)));
    let election = killed.elapsed();
    assert_ne!(next, leader);

    // For TTL + 2 s after the kill (any lease the leader's death had cost would have expired
    // by then), follow every key: the longest time one was missing.
    let mut missing_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut longest_gap = Duration::ZERO;
    while killed.elapsed() < Duration::from_secs(TTL + 2) {
        if let Some(keys) = observer.keys().await {
            for p in &products {
                if keys.contains_key(&p.key()) {
                    if let Some(since) = missing_since.remove(&p.key()) {
                        longest_gap = longest_gap.max(since.elapsed());
                    }
                } else {
                    missing_since.entry(p.key()).or_insert_with(Instant::now);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = observer.keys().await.expect("the observer reads the keys");
    run_for_calls(&load, 100).await;
    let result = load.finish().await;
    let relet = products
        .iter()
        .filter(|p| {
            after.get(&p.key()).map(|(_, lease)| lease) != before.get(&p.key()).map(|(_, l)| l)
        })
        .count();
    let mut fields = load_fields(&result);
    fields.extend([
        ("faults", "sigkill_leader".to_owned()),
        ("recovery_ms", ms(election)),
        (
            "keys_kept",
            format!(
                "{}/3",
                products
                    .iter()
                    .filter(|p| after.contains_key(&p.key()))
                    .count()
            ),
        ),
        ("leases_changed", relet.to_string()),
        ("longest_key_gap_ms", ms(longest_gap)),
    ]);
    report(SCENARIO, &fields);

    result.assert_no_failures(SCENARIO);
    for p in &products {
        assert!(
            after.contains_key(&p.key()),
            "{} lost its key after the leader died: {}",
            p.id(),
            p.log_tail()
        );
        assert!(
            !missing_since.contains_key(&p.key()),
            "{} is still missing",
            p.id()
        );
    }
    assert!(
        longest_gap < Duration::from_secs(TTL),
        "a key was missing for {longest_gap:?}"
    );
}

/// Three members, the first of which is dead before anything starts and stays dead: every
/// etcd call must go to the other two. Ten `product` processes in turn start, register, are
/// discovered and deregister at once on SIGTERM; then 50 in-process rounds of connect,
/// register, discover, deregister.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_with_one_member_dead_from_the_start() {
    const SCENARIO: &str = "one_member_dead";
    // Long: a key that goes within a second of the exit was revoked, not expired.
    const TTL: u64 = 30;
    const PRODUCTS: usize = 10;
    const ROUNDS: usize = 50;
    let mut cluster = blocking(|| EtcdCluster::start(3));
    blocking(|| {
        cluster.stop(0);
        cluster.wait_healthy(Duration::from_secs(40));
    });
    // The dead member comes first, as a client configured with the whole cluster lists it.
    let endpoints = cluster.endpoints();
    let live = endpoints[1..].to_vec();
    let observer = Observer::connect(&endpoints[1]).await;
    let mut failures: Vec<String> = Vec::new();

    // The client under test knows the dead member too. Should it fail to connect, the
    // products are still followed through a client of the live members only.
    let client = match EtcdRegistry::connect(options(&endpoints)).await {
        Ok(client) => client,
        Err(e) => {
            failures.push(format!("discovery client connect: {}", chain(&e)));
            support::discovery(options(&live)).await.0
        }
    };
    let discovery = client.discovery();

    let started = Instant::now();
    let mut products_ok = 0;
    for i in 0..PRODUCTS {
        let mut p = Product::start(&endpoints, &format!("dead_{i}"), TTL);
        let key = p.key();
        let registered = poll_until(Duration::from_secs(10), || {
            let (observer, key) = (observer.clone(), key.clone());
            let exited = p.exited();
            async move { exited.is_some() || observer.has(&key).await }
        })
        .await;
        if let Some(status) = p.exited() {
            failures.push(format!("product {i} exited ({status}): {}", p.log_tail()));
            continue;
        }
        if registered.is_none() {
            failures.push(format!(
                "product {i} not registered within 10 s: {}",
                p.log_tail()
            ));
            continue;
        }
        let id = p.id().to_owned();
        let discovered = poll_until(Duration::from_secs(5), || {
            let seen = ids(&discovery).contains(&id);
            async move { seen }
        })
        .await;
        if discovered.is_none() {
            failures.push(format!("product {i} not discovered within 5 s"));
            continue;
        }
        let code = p.sigterm().await;
        if code != Some(0) {
            failures.push(format!("product {i} exit code {code:?}: {}", p.log_tail()));
            continue;
        }
        let gone = poll_until(Duration::from_secs(3), || {
            let (observer, key) = (observer.clone(), key.clone());
            async move { observer.lacks(&key).await }
        })
        .await;
        if gone.is_none() {
            failures.push(format!(
                "product {i}: key still there 3 s after a clean exit (TTL {TTL} s): {}",
                p.log_tail()
            ));
            continue;
        }
        products_ok += 1;
    }
    let products_took = started.elapsed();

    // In process: connect, register, discover, deregister, 50 times; at most 60 s in all.
    let started = Instant::now();
    let (mut rounds_ok, mut rounds_run) = (0, 0);
    for i in 0..ROUNDS {
        if started.elapsed() > Duration::from_secs(60) {
            failures.push(format!("rounds stopped after 60 s, {rounds_run} run"));
            break;
        }
        rounds_run += 1;
        match tokio::time::timeout(Duration::from_secs(10), round(&endpoints, i)).await {
            Ok(Ok(())) => rounds_ok += 1,
            Ok(Err(e)) => failures.push(format!("round {i}: {e}")),
            Err(_) => failures.push(format!("round {i}: no result within 10 s")),
        }
    }
    let rounds_took = started.elapsed();

    report(
        SCENARIO,
        &[
            (
                "load",
                format!("{PRODUCTS} product starts + {ROUNDS} connect rounds"),
            ),
            ("faults", "m0 of 3 dead from the start".to_owned()),
            ("products_ok", format!("{products_ok}/{PRODUCTS}")),
            ("rounds_ok", format!("{rounds_ok}/{ROUNDS}")),
            (
                "failed",
                (PRODUCTS - products_ok + ROUNDS - rounds_ok).to_string(),
            ),
            ("products_s", format!("{:.1}", products_took.as_secs_f64())),
            ("rounds_s", format!("{:.1}", rounds_took.as_secs_f64())),
        ],
    );
    assert!(
        failures.is_empty(),
        "{} failures with one member dead, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!((products_ok, rounds_ok), (PRODUCTS, ROUNDS));
}

/// One round of [`cluster_with_one_member_dead_from_the_start`] in process.
async fn round(endpoints: &[String], i: usize) -> Result<(), String> {
    const NAME: &str = "deadloop";
    let registry = EtcdRegistry::connect(options(endpoints))
        .await
        .map_err(|e| format!("connect: {}", chain(&e)))?;
    let mut watch = registry
        .discovery()
        .watch(NAME)
        .map_err(|e| format!("watch: {}", chain(&e)))?;
    let instance = Instance::new(format!("round_{i}"), NAME, "127.0.0.1:9").unwrap();
    let registration = registry
        .register(instance)
        .await
        .map_err(|e| format!("register: {}", chain(&e)))?;
    let id = format!("round_{i}");
    let listed = |w: &svckit::registry::ServiceWatch| w.snapshot().iter().any(|x| x.id() == id);
    tokio::time::timeout(Duration::from_secs(3), async {
        while !listed(&watch) {
            let _ = watch.changed().await;
        }
    })
    .await
    .map_err(|_| "not discovered within 3 s".to_owned())?;
    registration
        .deregister()
        .await
        .map_err(|e| format!("deregister: {}", chain(&e)))?;
    tokio::time::timeout(Duration::from_secs(3), async {
        while listed(&watch) {
            let _ = watch.changed().await;
        }
    })
    .await
    .map_err(|_| "still discovered 3 s after deregistering".to_owned())
}

/// One etcd, SIGKILLed for 30 s while calls flow: the clients keep the last known instances
/// (no failed call), and once etcd is back every key is there within TTL + 2 s and stays.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_for_30_s_under_load() {
    const SCENARIO: &str = "etcd_down_30s";
    const TTL: u64 = 5;
    const OUTAGE: Duration = Duration::from_secs(30);
    let mut etcd = blocking(Etcd::start);
    let endpoints = vec![etcd.endpoint()];
    let (products, _client, discovery) =
        three_products_discovered(&endpoints, ["down_a", "down_b", "down_c"], TTL).await;

    let load = start_load(&discovery);
    run_for_calls(&load, 200).await;
    blocking(|| etcd.stop());
    let down = Instant::now();
    wait_for(
        "the client to notice the outage",
        Duration::from_secs(10),
        || discovery.state() == DiscoveryState::Reconnecting,
    )
    .await;
    while down.elapsed() < OUTAGE {
        assert_eq!(
            ids(&discovery).len(),
            3,
            "the client keeps the last known instances while etcd is down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let calls_during_outage = load.calls();
    blocking(|| etcd.restart());
    let back = Instant::now();
    let observer = Observer::connect(&etcd.endpoint()).await;

    // Follow the keys until TTL + 4 s after the restart (leases etcd merely carried over
    // would have expired by then): when were they all present for good?
    let mut settled: Option<Duration> = None;
    while back.elapsed() < Duration::from_secs(TTL + 4) {
        let all = observer
            .keys()
            .await
            .is_some_and(|k| products.iter().all(|p| k.contains_key(&p.key())));
        match (all, settled) {
            (true, None) => settled = Some(back.elapsed()),
            (false, Some(_)) => settled = None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let etcd_view = observer.values().await.expect("etcd answers");
    wait_for(
        "the client's view to equal etcd's",
        Duration::from_secs(10),
        || discovery.state() == DiscoveryState::Live && view(&discovery) == etcd_view,
    )
    .await;
    run_for_calls(&load, 100).await;
    let result = load.finish().await;
    let mut fields = load_fields(&result);
    fields.extend([
        ("faults", "sigkill_etcd_30s".to_owned()),
        (
            "recovery_ms",
            settled.map_or_else(|| "never".to_owned(), ms),
        ),
        ("calls_during_outage", (calls_during_outage).to_string()),
    ]);
    report(SCENARIO, &fields);

    result.assert_no_failures(SCENARIO);
    let settled = settled.unwrap_or_else(|| {
        panic!(
            "the keys were not all back {} s after etcd returned: {}",
            TTL + 4,
            products[0].log_tail()
        )
    });
    assert!(
        settled <= Duration::from_secs(TTL + 2),
        "keys back only after {settled:?}"
    );
}

/// Three instances; one is SIGKILLed while calls flow. Retries on the other instances lose no
/// call; the client stops picking the dead one once its lease expires.
#[tokio::test(flavor = "multi_thread")]
async fn instance_sigkilled_under_load() {
    const SCENARIO: &str = "instance_sigkilled";
    const TTL: u64 = 3;
    let etcd = blocking(Etcd::start);
    let endpoints = vec![etcd.endpoint()];
    let (mut products, _client, discovery) =
        three_products_discovered(&endpoints, ["kill_a", "kill_b", "kill_c"], TTL).await;

    let load = start_load(&discovery);
    run_for_calls(&load, 200).await;
    assert!(
        load.served_by("kill_b") > 0,
        "kill_b served before the kill"
    );
    products[1].sigkill().await;
    let gone = wait_for(
        "the dead instance to leave the client's view",
        Duration::from_secs(TTL + 5),
        || !ids(&discovery).contains(&"kill_b".to_owned()),
    )
    .await;
    run_for_calls(&load, 200).await;
    let result = load.finish().await;
    let mut fields = load_fields(&result);
    fields.extend([
        ("faults", "sigkill_1_of_3_instances".to_owned()),
        ("recovery_ms", ms(gone)),
    ]);
    report(SCENARIO, &fields);

    result.assert_no_failures(SCENARIO);
    assert_eq!(ids(&discovery), ["kill_a", "kill_c"]);
}

/// Three instances replaced one by one while calls flow: SIGTERM (the key goes before the
/// process exits), start the replacement, wait until it is discovered. No call fails and
/// every instance, old and new, served calls.
#[tokio::test(flavor = "multi_thread")]
async fn rolling_sigterm_restart_under_load() {
    const SCENARIO: &str = "rolling_restart";
    const TTL: u64 = 10;
    let etcd = blocking(Etcd::start);
    let endpoints = vec![etcd.endpoint()];
    let observer = Observer::connect(&etcd.endpoint()).await;
    let (mut old, _client, discovery) =
        three_products_discovered(&endpoints, ["roll_a", "roll_b", "roll_c"], TTL).await;

    let load = start_load(&discovery);
    run_for_calls(&load, 200).await;
    let mut new = Vec::new();
    let mut slowest_step = Duration::ZERO;
    for p in &mut old {
        let step = Instant::now();
        assert_eq!(p.sigterm().await, Some(0), "{} exits cleanly", p.id());
        let gone = poll_until(Duration::from_secs(3), || {
            let (observer, key) = (observer.clone(), p.key());
            async move { observer.lacks(&key).await }
        })
        .await;
        assert!(gone.is_some(), "{}'s key is gone once it exited", p.id());
        let replacement = Product::start(&endpoints, &format!("{}_2", p.id()), TTL);
        let id = replacement.id().to_owned();
        wait_for(
            "the replacement discovered",
            Duration::from_secs(20),
            || ids(&discovery).contains(&id),
        )
        .await;
        slowest_step = slowest_step.max(step.elapsed());
        new.push(replacement);
        run_for_calls(&load, 200).await;
    }
    let result = load.finish().await;
    let mut fields = load_fields(&result);
    fields.extend([
        ("faults", "sigterm_and_replace_3_of_3".to_owned()),
        ("recovery_ms", ms(slowest_step)),
    ]);
    report(SCENARIO, &fields);

    result.assert_no_failures(SCENARIO);
    for p in old.iter().chain(&new) {
        assert!(
            result.served.get(p.id()).copied().unwrap_or(0) > 0,
            "{} served no call: {:?}",
            p.id(),
            result.served
        );
    }
}

/// Compaction while instances churn, with a watch that falls behind: the discovery client
/// talks to one follower only, and that follower is SIGKILLed. Meanwhile, through the other
/// two members, instances come and go and etcd is compacted past the revision the client's
/// watch will resume from. When the follower is back (a member serves clients only once it
/// has caught up, compaction included), that watch is refused as compacted, the client
/// re-lists, and its view equals etcd's exactly.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_while_instances_churn_and_a_watch_falls_behind() {
    const SCENARIO: &str = "compaction_relist";
    const TTL: u64 = 10;
    let mut cluster = blocking(|| EtcdCluster::start(3));
    // A follower falls behind: no election gets in the way of the churn.
    let leader = blocking(|| cluster.wait_leader(Duration::from_secs(10)));
    let lagging = (leader + 1) % 3;
    let behind = vec![cluster.endpoint(lagging)];
    let live: Vec<String> = (0..3)
        .filter(|&i| i != lagging)
        .map(|i| cluster.endpoint(i))
        .collect();
    let observer = Observer::connect(&live[0]).await;
    let admin = Client::connect([live[0].as_str()], None).await.unwrap();
    let mut p0 = Product::start(&live, "churn_p0", TTL);
    let _p1 = Product::start(&live, "churn_p1", TTL);
    // No reconcile timer during the test: only the compaction can make it re-list.
    let (_client, watcher) =
        discovery(options(&behind).reconcile_interval(Duration::from_secs(600))).await;
    wait_for("both products discovered", Duration::from_secs(20), || {
        ids(&watcher).len() == 2
    })
    .await;
    let stats = watcher.stats();

    blocking(|| cluster.stop(lagging));
    wait_for("the watch to break", Duration::from_secs(10), || {
        watcher.state() == DiscoveryState::Reconnecting
    })
    .await;
    // Churn: a process goes, another comes, 30 in-process registrations of which 20 go
    // again, with a compaction at the newest revision after each step.
    let churner = EtcdRegistry::connect(options(&live)).await.unwrap();
    assert_eq!(p0.sigterm().await, Some(0));
    let _p2 = Product::start(&live, "churn_p2", TTL);
    wait_for_async("churn_p2 registered", Duration::from_secs(20), || {
        let observer = observer.clone();
        async move { observer.has(&support::key_of("churn_p2")).await }
    })
    .await;
    let mut compacted = vec![compact(&admin).await];
    let mut kept = Vec::new();
    for batch in 0..3 {
        let mut registrations = Vec::new();
        for j in 0..10 {
            let instance =
                Instance::new(format!("churn_{batch}_{j}"), "churnsvc", "127.0.0.1:9").unwrap();
            registrations.push(churner.register(instance).await.unwrap());
        }
        // The middle batch stays; the others go again.
        if batch == 1 {
            kept.extend(registrations);
        } else {
            for r in registrations {
                r.deregister().await.unwrap();
            }
        }
        compacted.push(compact(&admin).await);
    }
    let churn_events = 2 + 30 + 20;

    blocking(|| cluster.restart(lagging));
    let back = Instant::now();
    let etcd_view = observer.values().await.expect("etcd answers");
    assert_eq!(etcd_view.len(), 2 + 10, "{etcd_view:?}");
    let converged = wait_for(
        "the lagging client's view to equal etcd's",
        Duration::from_secs(20),
        || watcher.state() == DiscoveryState::Live && view(&watcher) == etcd_view,
    )
    .await;
    let after = watcher.stats();
    report(
        SCENARIO,
        &[
            ("load", format!("{churn_events} churn events")),
            (
                "faults",
                format!("sigkill_follower + {} compactions", compacted.len()),
            ),
            ("failed", "0".to_owned()),
            ("recovery_ms", ms(converged)),
            (
                "compacted_watches",
                (after.compactions - stats.compactions).to_string(),
            ),
            ("relists", (after.relists - stats.relists).to_string()),
            ("compacted_at", format!("{compacted:?}").replace(' ', "")),
            ("since_member_back_ms", ms(back.elapsed())),
        ],
    );
    assert!(
        after.compactions > stats.compactions,
        "the resumed watch met the compaction: {after:?}"
    );
    assert!(after.relists > stats.relists, "and re-listed: {after:?}");
    assert_eq!(view(&watcher), etcd_view);
    drop(kept);
}

/// Compacts etcd at its newest revision (physically, so the history is really gone);
/// returns that revision.
async fn compact(admin: &Client) -> i64 {
    let mut admin = admin.clone();
    let revision = admin
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    admin
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    revision
}

const ROOT_PASSWORD: &str = "s3cret-root";

/// etcd with authentication and 2-second auth tokens. Once every token has expired, the
/// product's lease is revoked from outside: it must re-register (with a fresh token), a
/// client must discover it, and on SIGTERM its key must go at once, not after the TTL.
#[tokio::test(flavor = "multi_thread")]
async fn auth_token_expiry() {
    const SCENARIO: &str = "auth_token_expiry";
    const TOKEN_TTL: Duration = Duration::from_secs(2);
    // Keepalives every TTL/3 = 3 s, longer than the token lives.
    const TTL: u64 = 9;
    let etcd = blocking(|| Etcd::builder().auth_token_ttl(TOKEN_TTL).start());
    let endpoints = vec![etcd.endpoint()];
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    raw.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();
    let observer = Observer::with_auth(&etcd.endpoint(), "root", ROOT_PASSWORD);

    let mut product = Product::start_with_env(
        &endpoints,
        "auth_a",
        TTL,
        &[
            ("SVCKIT_ETCD_USER", "root"),
            ("SVCKIT_ETCD_PASSWORD", ROOT_PASSWORD),
        ],
    );
    let key = product.key();
    let registered = poll_until(Duration::from_secs(15), || {
        let (observer, key) = (observer.clone(), key.clone());
        async move { observer.has(&key).await }
    })
    .await;
    assert!(
        registered.is_some(),
        "not registered: {}",
        product.log_tail()
    );
    let (_client, discovery) = discovery(options(&endpoints).auth("root", ROOT_PASSWORD)).await;
    wait_for("auth_a discovered", Duration::from_secs(10), || {
        ids(&discovery) == ["auth_a"]
    })
    .await;

    // Let every token in play expire: the product's and the client's.
    tokio::time::sleep(TOKEN_TTL + Duration::from_millis(1500)).await;
    let lease = observer.keys().await.expect("etcd answers")[&key].1;
    let mut admin = observer.client().await.expect("root connects");
    admin.lease_revoke(lease).await.unwrap();
    let revoked = Instant::now();
    let back = poll_until(Duration::from_secs(TTL), || {
        let (observer, key) = (observer.clone(), key.clone());
        async move {
            observer
                .keys()
                .await
                .and_then(|k| k.get(&key).map(|(_, l)| *l))
                .is_some_and(|l| l != lease)
        }
    })
    .await;
    let discovered = match back {
        Some(_) => poll_until(Duration::from_secs(5), || {
            let seen = ids(&discovery) == ["auth_a"];
            async move { seen }
        })
        .await
        .is_some(),
        None => false,
    };
    let code = product.sigterm().await;
    let exited = Instant::now();
    let gone = poll_until(Duration::from_secs(3), || {
        let (observer, key) = (observer.clone(), key.clone());
        async move { observer.lacks(&key).await }
    })
    .await;
    report(
        SCENARIO,
        &[
            ("load", "1 instance, 1 watcher".to_owned()),
            ("faults", "token_ttl_2s + lease_revoked".to_owned()),
            (
                "failed",
                (u8::from(back.is_none()) + u8::from(!discovered) + u8::from(gone.is_none()))
                    .to_string(),
            ),
            ("recovery_ms", back.map_or_else(|| "never".to_owned(), ms)),
            (
                "deregistered_ms",
                match (back, gone) {
                    (None, _) => "n/a".to_owned(),
                    (Some(_), None) => "never".to_owned(),
                    (Some(_), Some(gone)) => ms(gone),
                },
            ),
        ],
    );

    assert!(
        back.is_some(),
        "not re-registered within {TTL} s of the revoke ({:?} ago): {}",
        revoked.elapsed(),
        product.log_tail()
    );
    assert!(discovered, "the client did not see the re-registration");
    assert_eq!(code, Some(0), "exit code: {}", product.log_tail());
    assert!(
        gone.is_some(),
        "the key outlived a clean exit by {:?} (TTL {TTL} s): {}",
        exited.elapsed(),
        product.log_tail()
    );
}
