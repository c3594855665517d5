//! The balancer's metrics and [`endpoint_stats`] under real traffic: axum servers on
//! loopback registered in a real etcd, Endpoints calling them by name. One Prometheus
//! recorder serves the whole test binary, so each test calls a service of its own.

mod cluster;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster::{Cluster, Server, DEAD};
use svckit_balancer::{endpoint_stats, EndpointStats, Error, HttpClient, RetryPolicy};
use svckit_testing::metrics::{install, scrape, Scrape};

const REQUESTS: &str = "svckit_endpoint_requests_total";
const DURATION_COUNT: &str = "svckit_endpoint_request_duration_seconds_count";
const DURATION_SUM: &str = "svckit_endpoint_request_duration_seconds_sum";
const RETRIES: &str = "svckit_endpoint_retries_total";
const EJECTIONS: &str = "svckit_endpoint_ejections_total";
const IN_FLIGHT: &str = "svckit_endpoint_in_flight";
const OUTCOMES: [&str; 9] = [
    "ok",
    "no_instances",
    "timeout",
    "transport",
    "body_too_large",
    "status",
    "decode",
    "encode",
    "cancelled",
];

/// `(service, outcome)` of the requests counter.
fn requests(m: &Scrape, service: &str, outcome: &str) -> Option<f64> {
    m.get(REQUESTS, &[("service", service), ("outcome", outcome)])
}

/// The stats of `service`'s live Endpoints (one entry per picker).
fn stats_of(service: &str) -> Vec<EndpointStats> {
    endpoint_stats()
        .into_iter()
        .filter(|s| s.service == service)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_calls_are_counted_once_each_with_their_duration() {
    install();
    let (a, b) = (
        Server::start("a", false).await,
        Server::start("b", false).await,
    );
    let c = Cluster::start(
        "metrics_ok",
        &[("a", a.addr.to_string()), ("b", b.addr.to_string())],
    )
    .await;
    let client = HttpClient::new();
    let ep = c.endpoint(&client).build().unwrap();
    let clone = ep.clone();
    let other = c.endpoint(&client).build().unwrap();
    let mut answers = BTreeMap::<String, usize>::new();
    for (e, n) in [(&ep, 12), (&clone, 5), (&other, 3)] {
        for _ in 0..n {
            *answers.entry(e.invoke("/ok").await.unwrap()).or_default() += 1;
        }
    }
    assert_eq!(answers.values().sum::<usize>(), 20);
    assert_eq!(answers.len(), 2, "both instances answered: {answers:?}");

    let m = scrape();
    let svc = [("service", "metrics_ok")];
    assert_eq!(requests(&m, "metrics_ok", "ok"), Some(20.0));
    for outcome in &OUTCOMES[1..] {
        assert_eq!(requests(&m, "metrics_ok", outcome), Some(0.0), "{outcome}");
    }
    assert_eq!(m.get(DURATION_COUNT, &svc), Some(20.0));
    let seconds = m.get(DURATION_SUM, &svc).unwrap();
    assert!(seconds > 0.0 && seconds < 20.0, "{seconds}");
    assert_eq!(m.get(RETRIES, &svc), Some(0.0));
    assert_eq!(m.get(EJECTIONS, &svc), Some(0.0));
    assert_eq!(m.get(IN_FLIGHT, &svc), Some(0.0));

    // Clones share one Endpoint's counters; separate builds add up in endpoint_stats().
    let mine = ep.stats().unwrap();
    assert_eq!((mine.requests, mine.endpoints), (17, 1));
    assert_eq!(clone.stats().unwrap().requests, 17);
    assert_eq!(other.stats().unwrap().requests, 3);
    let all = stats_of("metrics_ok");
    assert_eq!(all.len(), 1, "{all:?}");
    let s = &all[0];
    assert_eq!(s.picker, "round_robin");
    assert_eq!(
        (
            s.endpoints,
            s.requests,
            s.failures,
            s.retries,
            s.ejections,
            s.in_flight
        ),
        (2, 20, 0, 0, 0, 0)
    );
    drop(other);
    let all = stats_of("metrics_ok");
    assert_eq!((all[0].endpoints, all[0].requests), (1, 17));
    drop((ep, clone));
    assert!(
        stats_of("metrics_ok").is_empty(),
        "dropped Endpoints leave the view"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_is_ejected_once_and_its_call_retried() {
    install();
    let live = Server::start("b_live", false).await;
    let c = Cluster::start(
        "metrics_dead",
        &[
            ("a_dead", DEAD.to_owned()),
            ("b_live", live.addr.to_string()),
        ],
    )
    .await;
    let client = HttpClient::new();
    // Round robin starts at a_dead: the first call is refused there and retried on b_live;
    // later calls skip a_dead while it is ejected.
    let ep = c
        .endpoint(&client)
        .retry(RetryPolicy::new(2, Duration::from_secs(5)).no_budget())
        .ejection(Duration::from_secs(600))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(ep.invoke("/ok").await.unwrap(), "b_live");
    }
    let m = scrape();
    let svc = [("service", "metrics_dead")];
    assert_eq!(requests(&m, "metrics_dead", "ok"), Some(10.0));
    assert_eq!(requests(&m, "metrics_dead", "transport"), Some(0.0));
    assert_eq!(m.get(RETRIES, &svc), Some(1.0));
    assert_eq!(m.get(EJECTIONS, &svc), Some(1.0));
    assert_eq!(m.get(DURATION_COUNT, &svc), Some(10.0));
    let s = ep.stats().unwrap();
    assert_eq!(
        (s.requests, s.failures, s.retries, s.ejections),
        (10, 0, 1, 1)
    );

    // Without retry (and without ejection) a call that meets the dead instance fails.
    let once = c
        .endpoint(&client)
        .ejection(Duration::ZERO)
        .build()
        .unwrap();
    let err = once.invoke("/ok").await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport { addr, connect: true, .. } if addr == DEAD),
        "{err:?}"
    );
    let m = scrape();
    assert_eq!(requests(&m, "metrics_dead", "transport"), Some(1.0));
    assert_eq!(m.get(EJECTIONS, &svc), Some(1.0), "ejection was off");
    assert_eq!(m.get(RETRIES, &svc), Some(1.0));
    let s = once.stats().unwrap();
    assert_eq!((s.requests, s.failures, s.ejections), (1, 1, 0));
    let all = stats_of("metrics_dead");
    assert_eq!(
        (all[0].endpoints, all[0].requests, all[0].failures),
        (2, 11, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_count_as_status_503s_are_retried_and_refused_answers_as_decode() {
    install();
    let busy = Server::start("a_busy", true).await;
    let calm = Server::start("b_calm", false).await;
    let c = Cluster::start(
        "metrics_status",
        &[
            ("a_busy", busy.addr.to_string()),
            ("b_calm", calm.addr.to_string()),
        ],
    )
    .await;
    let ep = c
        .endpoint(&HttpClient::new())
        .retry(RetryPolicy::new(2, Duration::from_secs(5)).no_budget())
        .build()
        .unwrap();
    // A 503 from a_busy is retried on b_calm.
    for _ in 0..6 {
        assert_eq!(ep.invoke("/busy").await.unwrap(), "b_calm");
    }
    let retried = busy.unavailable();
    assert!(retried >= 1, "round robin reached a_busy");
    // A 500 is not retried (not a gateway status): its outcome is `status`.
    for _ in 0..4 {
        let err = ep.invoke("/fail").await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    }
    // A 404 that decode refuses is `decode`, not `status`.
    let err = ep.invoke("/missing").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");

    let m = scrape();
    let svc = [("service", "metrics_status")];
    assert_eq!(requests(&m, "metrics_status", "ok"), Some(6.0));
    assert_eq!(requests(&m, "metrics_status", "status"), Some(4.0));
    assert_eq!(requests(&m, "metrics_status", "decode"), Some(1.0));
    assert_eq!(m.get(DURATION_COUNT, &svc), Some(11.0));
    assert_eq!(m.get(RETRIES, &svc), Some(retried as f64));
    assert_eq!(m.get(EJECTIONS, &svc), Some(0.0));
    let s = ep.stats().unwrap();
    assert_eq!((s.requests, s.failures, s.retries), (11, 5, retried as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_is_one_during_a_slow_call_and_zero_once_it_ends_or_is_dropped() {
    install();
    let s = Server::start("a", false).await;
    let c = Cluster::start("metrics_slow", &[("a", s.addr.to_string())]).await;
    let ep = c.endpoint(&HttpClient::new()).build().unwrap();
    let svc = [("service", "metrics_slow")];
    let in_flight = || scrape().get(IN_FLIGHT, &svc);
    let entered = || async {
        tokio::time::timeout(Duration::from_secs(5), s.gate.entered.notified())
            .await
            .expect("the call reaches the server")
    };

    let call = tokio::spawn(ep.invoke("/gate"));
    entered().await;
    assert_eq!(in_flight(), Some(1.0));
    assert_eq!(ep.stats().unwrap().in_flight, 1);
    assert_eq!(stats_of("metrics_slow")[0].in_flight, 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.gate.open.notify_one();
    assert_eq!(call.await.unwrap().unwrap(), "a");
    assert_eq!(in_flight(), Some(0.0));
    let m = scrape();
    assert_eq!(requests(&m, "metrics_slow", "ok"), Some(1.0));
    let seconds = m.get(DURATION_SUM, &svc).unwrap();
    assert!(
        seconds >= 0.1,
        "the call's duration includes the wait: {seconds}"
    );

    // A call dropped by its caller mid-way is counted once, as cancelled.
    let call = tokio::spawn(ep.invoke("/gate"));
    entered().await;
    assert_eq!(in_flight(), Some(1.0));
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let m = scrape();
    assert_eq!(m.get(IN_FLIGHT, &svc), Some(0.0));
    assert_eq!(requests(&m, "metrics_slow", "cancelled"), Some(1.0));
    assert_eq!(m.get(DURATION_COUNT, &svc), Some(2.0));
    let st = ep.stats().unwrap();
    assert_eq!((st.requests, st.failures, st.in_flight), (2, 0, 0));
}
