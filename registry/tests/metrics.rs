//! The registry's metric families against a real etcd: each moves as the traffic says.
//!
//! One Prometheus recorder serves the whole test binary, so every test uses its own service
//! names; the families without a service label (resyncs, malformed keys) are compared
//! before and after.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use etcd_client::{Client, CompactionOptions, GetOptions};
use svckit_registry::{
    DiscoveryState, EtcdOptions, EtcdRegistry, Instance, Lifecycle, Registration,
    RegistrationState, Registry, RouteLayer,
};
use svckit_testing::metrics::{install, scrape};
use svckit_testing::{Etcd, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

const REGISTERED: &str = "svckit_registry_registered";
const KEEPALIVE_FAILURES: &str = "svckit_registry_lease_keepalive_failures_total";
const REREGISTRATIONS: &str = "svckit_registry_reregistrations_total";
const INSTANCES: &str = "svckit_discovery_instances";
const RESYNCS: &str = "svckit_discovery_resyncs_total";
const MALFORMED: &str = "svckit_discovery_malformed_keys_total";
const REQUESTS: &str = "svckit_http_server_requests_total";
const DURATION_COUNT: &str = "svckit_http_server_request_duration_seconds_count";
const DURATION_SUM: &str = "svckit_http_server_request_duration_seconds_sum";
const IN_FLIGHT: &str = "svckit_http_server_in_flight";
const DRAIN: &str = "svckit_http_server_drain_duration_seconds";

fn options(etcd_endpoint: String, ttl: Duration) -> EtcdOptions {
    EtcdOptions::new([etcd_endpoint])
        .ttl(ttl)
        .dial_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(1))
}

async fn connect(endpoint: String) -> EtcdRegistry {
    install();
    EtcdRegistry::connect(options(endpoint, Duration::from_secs(10)))
        .await
        .unwrap()
}

async fn register(registry: &EtcdRegistry, id: &str, service: &str) -> Registration {
    registry
        .register(Instance::new(id, service, "127.0.0.1:1").unwrap())
        .await
        .unwrap()
}

/// The value of `name` with `labels` in a fresh scrape (`None`: no such sample).
fn value(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape().get(name, labels)
}

/// Waits until `name` with `labels` reads `want`, failing after `limit` with the last value.
async fn until_value(name: &str, labels: &[(&str, &str)], want: f64, limit: Duration) {
    let start = Instant::now();
    loop {
        let now = value(name, labels);
        if now == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{name}{labels:?}: {now:?}, not {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` holds, failing after `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registered_gauge_counts_live_registrations_of_a_service() {
    let etcd = Etcd::start();
    let registry = connect(etcd.endpoint()).await;
    let service = [("service", "m_registered")];
    assert_eq!(value(REGISTERED, &service), None);

    let a = register(&registry, "a", "m_registered").await;
    assert_eq!(value(REGISTERED, &service), Some(1.0));
    let b = register(&registry, "b", "m_registered").await;
    assert_eq!(value(REGISTERED, &service), Some(2.0));
    a.deregister().await.unwrap();
    assert_eq!(value(REGISTERED, &service), Some(1.0));
    // Dropped without deregistering (what a process that exits does): no longer held.
    drop(b);
    assert_eq!(value(REGISTERED, &service), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_instances_gauge_follows_the_set_discovery_sees() {
    let etcd = Etcd::start();
    let server = connect(etcd.endpoint()).await;
    let client = connect(etcd.endpoint()).await;
    let discovery = client.discovery();
    let limit = Duration::from_secs(5);
    let service = [("service", "m_instances")];

    let a = register(&server, "a", "m_instances").await;
    let b = register(&server, "b", "m_instances").await;
    let c = register(&server, "c", "m_instances").await;
    until_value(INSTANCES, &service, 3.0, limit).await;
    assert_eq!(discovery.instances("m_instances").len(), 3);
    b.deregister().await.unwrap();
    until_value(INSTANCES, &service, 2.0, limit).await;
    a.deregister().await.unwrap();
    c.deregister().await.unwrap();
    // The last one gone: 0, not a stale 1.
    until_value(INSTANCES, &service, 0.0, limit).await;
    assert!(discovery.instances("m_instances").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_key_under_the_prefix_is_counted_once() {
    let etcd = Etcd::start();
    install();
    // Re-lists every 200 ms: each would count the key again if keys were not remembered.
    let registry = EtcdRegistry::connect(
        options(etcd.endpoint(), Duration::from_secs(10))
            .reconcile_interval(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let discovery = registry.discovery();
    let _ok = register(&registry, "ok", "m_malformed").await;
    until_value(
        INSTANCES,
        &[("service", "m_malformed")],
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let before = scrape().sum(MALFORMED, &[]);

    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    raw.put("/services/not-an-id/m_malformed", "127.0.0.1:2", None)
        .await
        .unwrap();
    let start = Instant::now();
    while scrape().sum(MALFORMED, &[]) == before {
        assert!(start.elapsed() < Duration::from_secs(5), "not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scrape().sum(MALFORMED, &[]), before + 1.0);
    assert_eq!(discovery.instances("m_malformed").len(), 1);
    let relists = discovery.stats().relists;
    let start = Instant::now();
    while discovery.stats().relists < relists + 3 {
        assert!(start.elapsed() < Duration::from_secs(5), "no reconcile");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        scrape().sum(MALFORMED, &[]),
        before + 1.0,
        "counted again by a re-list"
    );
    assert_eq!(discovery.stats().malformed_skipped, 1);

    // Deleted, seen gone by a re-list, written again: a new malformed entry, counted.
    raw.delete("/services/not-an-id/m_malformed", None)
        .await
        .unwrap();
    let relists = discovery.stats().relists;
    while discovery.stats().relists < relists + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    raw.put("/services/not-an-id/m_malformed", "127.0.0.1:3", None)
        .await
        .unwrap();
    let start = Instant::now();
    while discovery.stats().malformed_skipped < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not counted again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(scrape().sum(MALFORMED, &[]), before + 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_then_compacted_watch_counts_a_reconnect_and_a_compaction() {
    let etcd = Etcd::start();
    let proxy = Proxy::start(etcd.endpoint()).await;
    let server = connect(etcd.endpoint()).await;
    let watcher = connect(proxy.addr().to_string()).await;
    let discovery = watcher.discovery();
    let a = register(&server, "a", "m_resync").await;
    let service = [("service", "m_resync")];
    until_value(INSTANCES, &service, 1.0, Duration::from_secs(5)).await;
    let compaction = [("reason", "compaction")];
    let reconnect = [("reason", "reconnect")];
    let (compactions, reconnects) = {
        let s = scrape();
        (s.sum(RESYNCS, &compaction), s.sum(RESYNCS, &reconnect))
    };

    // The watch breaks; meanwhile `a` leaves and `b` joins, and etcd compacts those
    // revisions away, so the watch cannot resume: it must re-list.
    proxy.cut();
    eventually(Duration::from_secs(5), "watcher notices", || {
        discovery.state() == DiscoveryState::Reconnecting
    })
    .await;
    a.deregister().await.unwrap();
    let _b = register(&server, "b", "m_resync").await;
    let _c = register(&server, "c", "m_resync").await;
    let mut raw = Client::connect([etcd.endpoint()], None).await.unwrap();
    let revision = raw
        .get("/services/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();
    assert_eq!(
        value(INSTANCES, &service),
        Some(1.0),
        "still the stale view"
    );
    proxy.heal();

    until_value(INSTANCES, &service, 2.0, Duration::from_secs(10)).await;
    let s = scrape();
    assert!(
        s.sum(RESYNCS, &compaction) >= compactions + 1.0,
        "compaction resyncs: {} before, {} after",
        compactions,
        s.sum(RESYNCS, &compaction)
    );
    assert!(
        s.sum(RESYNCS, &reconnect) >= reconnects + 1.0,
        "reconnect resyncs: {} before, {} after",
        reconnects,
        s.sum(RESYNCS, &reconnect)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconcile_timer_counts_as_a_resync() {
    let etcd = Etcd::start();
    install();
    let registry = EtcdRegistry::connect(
        options(etcd.endpoint(), Duration::from_secs(10))
            .reconcile_interval(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let reconcile = [("reason", "reconcile")];
    let before = scrape().sum(RESYNCS, &reconcile);
    let discovery = registry.discovery();
    // The other tests keep the default interval (30 s): two more re-lists are this view's.
    let start = Instant::now();
    while scrape().sum(RESYNCS, &reconcile) < before + 2.0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no reconcile");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(discovery.state(), DiscoveryState::Live);
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_down_longer_than_the_ttl_counts_keepalive_failures_and_a_reregistration() {
    let ttl = Duration::from_secs(2);
    let mut etcd = Etcd::start();
    install();
    let registry = EtcdRegistry::connect(options(etcd.endpoint(), ttl))
        .await
        .unwrap();
    let reg = register(&registry, "a", "m_lease").await;
    let service = [("service", "m_lease")];
    // Renewed a few times without a failure.
    tokio::time::sleep(ttl).await;
    assert_eq!(value(KEEPALIVE_FAILURES, &service), Some(0.0));
    assert_eq!(value(REREGISTRATIONS, &service), Some(0.0));

    tokio::task::block_in_place(|| etcd.stop());
    eventually(ttl + Duration::from_secs(3), "lease lost", || {
        reg.state() == RegistrationState::Recovering
    })
    .await;
    let failures = value(KEEPALIVE_FAILURES, &service).unwrap();
    assert!(failures >= 1.0, "keepalive failures: {failures}");
    assert_eq!(value(REREGISTRATIONS, &service), Some(0.0), "not back yet");
    // Still held by this process while it recovers.
    assert_eq!(value(REGISTERED, &service), Some(1.0));

    tokio::task::block_in_place(|| etcd.restart());
    eventually(ttl + Duration::from_secs(3), "registered again", || {
        reg.state() == RegistrationState::Registered
    })
    .await;
    assert_eq!(value(REREGISTRATIONS, &service), Some(1.0));
    reg.deregister().await.unwrap();
    assert_eq!(value(REGISTERED, &service), Some(0.0));
}

/// `GET path` on a fresh connection; the response's status code once the body is read.
async fn get_status(addr: &str, path: &str) -> u16 {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await.unwrap();
    let line = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

/// An app whose `/slow` handler waits for `release`.
fn app(release: Arc<Notify>) -> Router {
    Router::new()
        .route(
            "/prod/{id}",
            get(|Path(id): Path<u32>| async move { format!("product {id}") }),
        )
        .route(
            "/slow",
            get(move || async move {
                release.notified().await;
                "done"
            }),
        )
        .layer(RouteLayer)
}

#[tokio::test(flavor = "multi_thread")]
async fn served_requests_are_counted_by_route_template_and_status_class() {
    let etcd = Etcd::start();
    let registry = connect(etcd.endpoint()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lifecycle = Arc::new(
        Lifecycle::builder("m_http")
            .handle_signals(false)
            .register(&registry, addr)
            .await
            .unwrap(),
    );
    let addr = addr.to_string();
    let service = ("service", "m_http");
    assert_eq!(value(REGISTERED, &[service]), Some(1.0));
    let release = Arc::new(Notify::new());
    let server = {
        let lifecycle = lifecycle.clone();
        let app = app(release.clone());
        tokio::spawn(async move { lifecycle.serve(listener, app).await })
    };

    for id in 0..20 {
        assert_eq!(get_status(&addr, &format!("/prod/{id}")).await, 200);
    }
    // Matched, then refused by the extractor: the route's 4xx.
    assert_eq!(get_status(&addr, "/prod/not-a-number").await, 400);
    // No route: axum's fallback.
    assert_eq!(get_status(&addr, "/no/such/path").await, 404);

    // Counted when the response body is done, which may be just after the client read it.
    until_value(DURATION_COUNT, &[service], 22.0, Duration::from_secs(5)).await;
    let s = scrape();
    let prod = ("route", "/prod/{id}");
    assert_eq!(
        s.get(REQUESTS, &[service, prod, ("status", "2xx")]),
        Some(20.0)
    );
    assert_eq!(
        s.get(REQUESTS, &[service, prod, ("status", "4xx")]),
        Some(1.0)
    );
    assert_eq!(
        s.get(REQUESTS, &[service, prod, ("status", "5xx")]),
        Some(0.0)
    );
    assert_eq!(
        s.get(
            REQUESTS,
            &[service, ("route", "unmatched"), ("status", "4xx")]
        ),
        Some(1.0)
    );
    // One label per template, never a path.
    let routes: BTreeSet<&str> = s
        .samples
        .iter()
        .filter(|x| {
            x.name == REQUESTS
                && x.labels
                    .iter()
                    .any(|(k, v)| k == "service" && v == "m_http")
        })
        .filter_map(|x| x.labels.iter().find(|(k, _)| k == "route"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(routes, BTreeSet::from(["/prod/{id}", "unmatched"]));
    assert_eq!(s.get(DURATION_COUNT, &[service]), Some(22.0));
    assert_eq!(s.get(IN_FLIGHT, &[service]), Some(0.0));

    // A slow request is in flight until its response is sent, and timed to the end.
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { get_status(&addr, "/slow").await }
    });
    until_value(IN_FLIGHT, &[service], 1.0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(value(IN_FLIGHT, &[service]), Some(1.0));
    release.notify_one();
    assert_eq!(slow.await.unwrap(), 200);
    until_value(IN_FLIGHT, &[service], 0.0, Duration::from_secs(5)).await;
    let slow_route = ("route", "/slow");
    assert_eq!(value(DURATION_COUNT, &[service, slow_route]), Some(1.0));
    let took = value(DURATION_SUM, &[service, slow_route]).unwrap();
    assert!(took >= 0.3, "the slow request took {took} s");
    assert_eq!(value(DURATION_COUNT, &[service]), Some(23.0));
    assert_eq!(scrape().sum(REQUESTS, &[service]), 23.0);

    // A drain that waits for a request in flight for 400 ms is recorded as such.
    assert_eq!(value(DRAIN, &[service]), None);
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move { get_status(&addr, "/slow").await }
    });
    until_value(IN_FLIGHT, &[service], 1.0, Duration::from_secs(5)).await;
    lifecycle.shutdown();
    until_value(REGISTERED, &[service], 0.0, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // While it drains, a scrape sees how long it has been draining.
    let so_far = value(DRAIN, &[service]).expect("drain duration while draining");
    assert!((0.2..5.0).contains(&so_far), "draining for {so_far} s");
    release.notify_one();
    assert_eq!(slow.await.unwrap(), 200);
    server.await.unwrap().unwrap();
    let drain = value(DRAIN, &[service]).expect("drain duration recorded");
    assert!((0.3..5.0).contains(&drain), "drain took {drain} s");
    assert_eq!(value(IN_FLIGHT, &[service]), Some(0.0));
}
