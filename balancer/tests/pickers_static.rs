//! The pickers, retry and errors against real HTTP servers on loopback, with a static
//! discovery view. The same scenarios against etcd live in `etcd.rs`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;
use svckit_balancer::{
    ConsistentHash, Error, HttpClient, P2c, Picker, Random, RetryPolicy, RoundRobin,
};
use svckit_registry::Discovery;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_3000_calls_evenly() {
    let servers = servers(3, Duration::ZERO).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::Random(Random::from_seed(42)))
        .build()
        .unwrap();
    let results = run(&ep, 3000, 32, |_| Call::get("/id")).await;
    let t = tally(&results);
    for s in &servers {
        let share = t.get(&s.id).copied().unwrap_or(0) as f64 / 3000.0;
        assert!((0.25..=0.42).contains(&share), "{}: {share} ({t:?})", s.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_an_exact_cycle() {
    let servers = servers(3, Duration::ZERO).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::RoundRobin(RoundRobin::new()))
        .build()
        .unwrap();
    for k in 0..30 {
        // Instances are sorted by id: s0, s1, s2.
        assert_eq!(
            ep.invoke(Call::get("/id")).await.unwrap(),
            format!("s{}", k % 3)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_is_sticky_and_only_the_removed_keys_move() {
    let servers = servers(3, Duration::ZERO).await;
    let client = HttpClient::new();
    let hashed = |d: &Discovery| {
        builder(&client, d)
            .picker(Picker::ConsistentHash(ConsistentHash::new()))
            .hash_key(|c: &Call| c.key.clone())
            .build()
            .unwrap()
    };
    let all = hashed(&static_discovery(&servers));
    let two = hashed(&static_discovery(&servers[..2]));
    let mut owner = HashMap::new();
    for round in 0..3 {
        let results = run(&all, 300, 16, |i| Call::keyed(format!("key{i}"))).await;
        for (i, r) in results.into_iter().enumerate() {
            let id = r.unwrap();
            let prev = owner.entry(i).or_insert_with(|| id.clone());
            assert_eq!(*prev, id, "key{i} moved in round {round}");
        }
    }
    let t: HashMap<&String, usize> = owner.values().fold(HashMap::new(), |mut m, id| {
        *m.entry(id).or_default() += 1;
        m
    });
    assert_eq!(t.len(), 3, "every instance owns keys: {t:?}");
    let after = run(&two, 300, 16, |i| Call::keyed(format!("key{i}"))).await;
    for (i, r) in after.into_iter().enumerate() {
        let id = r.unwrap();
        if owner[&i] != "s2" {
            assert_eq!(owner[&i], id, "key{i} moved although its owner stayed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_load_hash_spreads_a_hot_key() {
    let servers = servers(3, Duration::from_millis(20)).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::ConsistentHash(
            ConsistentHash::new().bounded_load(0.25),
        ))
        .hash_key(|c: &Call| c.key.clone())
        .build()
        .unwrap();
    // One hot key, 30 in flight: without the bound all would go to one instance.
    let results = run(&ep, 90, 30, |_| Call::keyed("hot")).await;
    let t = tally(&results);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t.values().all(|&n| n <= 50), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_avoids_a_20x_slower_instance() {
    // 50 ms against 1 s: slow enough that a loaded machine's queueing does not shrink the
    // 20x between them.
    let mut servers = servers(2, Duration::from_millis(50)).await;
    servers.push(TestServer::start("slow", Duration::from_secs(1)).await);
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::P2c(P2c::from_seed(3)))
        .build()
        .unwrap();
    let results = run(&ep, 3000, 64, |_| Call::get("/id")).await;
    let t = tally(&results);
    assert!(!t.contains_key("error"), "{t:?}");
    let slow = t.get("slow").copied().unwrap_or(0);
    assert!(slow < 300, "slow instance got {slow} of 3000: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_survives_a_server_killed_mid_run() {
    let servers = servers(3, Duration::from_millis(1)).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::RoundRobin(RoundRobin::new()))
        .retry(RetryPolicy::new(3, Duration::from_secs(5)))
        .build()
        .unwrap();
    let first = run(&ep, 300, 16, |_| Call::get("/id")).await;
    let victim = &servers[1];
    let before = victim.hits();
    assert!(before > 50, "victim served {before} before the kill");
    // Kill it while calls are in flight.
    let (results, ()) = tokio::join!(run(&ep, 700, 16, |_| Call::get("/id")), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        victim.kill();
    });
    let all: Vec<_> = first.into_iter().chain(results).collect();
    let failed: Vec<_> = all.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(all.len(), 1000);
    let t = tally(&all);
    assert!(t["s0"] > 300 && t["s2"] > 300, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_lists_attempts_and_post_is_not_retried_after_a_timeout() {
    // Answers far slower than the timeout, which leaves a loaded machine time to send each
    // attempt's request before it times out.
    let slow = servers(2, Duration::from_secs(3)).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&slow))
        .timeout(Duration::from_millis(300))
        .retry(RetryPolicy::new(2, Duration::from_secs(5)))
        .build()
        .unwrap();
    let err = ep.invoke(Call::get("/id")).await.unwrap_err();
    match &err {
        Error::RetriesExhausted { attempts, last, .. } => {
            assert_eq!(attempts.len(), 2);
            assert_ne!(
                attempts[0].addr(),
                attempts[1].addr(),
                "second attempt on another instance"
            );
            assert!(matches!(**last, Error::Timeout { .. }));
        }
        other => panic!("expected RetriesExhausted, got {other:?}"),
    }
    assert!(err.is_timeout());
    let hits = || slow.iter().map(TestServer::hits).sum::<usize>();
    until_hits(&hits, 2).await;
    let post = Call {
        method: http::Method::POST,
        ..Call::get("/id")
    };
    let err = ep.invoke(post).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    until_hits(&hits, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hits(), 3, "the POST was sent once");
}

/// Waits (up to 5 s) until the servers have seen `n` requests.
async fn until_hits(hits: &impl Fn() -> usize, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hits() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} hits, not {n}",
            hits()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(hits(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_status_is_retried_on_another_instance() {
    let servers = vec![
        TestServer::start_with("bad", Duration::ZERO, true).await,
        TestServer::start("good", Duration::ZERO).await,
    ];
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::RoundRobin(RoundRobin::new()))
        .retry(RetryPolicy::new(2, Duration::from_secs(5)))
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(ep.invoke(Call::get("/flaky")).await.unwrap(), "good");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instances_is_typed_and_immediate() {
    let ep = builder(&HttpClient::new(), &Discovery::from_static([]))
        .retry(RetryPolicy::new(3, Duration::from_secs(2)))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = ep.invoke(Call::get("/id")).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    match err {
        Error::NoInstances { service } => assert_eq!(service, SERVICE),
        other => panic!("expected NoInstances, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_a_typed_error() {
    let servers = servers(1, Duration::ZERO).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .max_body_bytes(1000)
        .build()
        .unwrap();
    let err = ep.invoke(Call::get("/big")).await.unwrap_err();
    assert!(
        matches!(err, Error::BodyTooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    // The decode function's error keeps its source.
    let err = ep.invoke(Call::get("/nope")).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert_eq!(
        std::error::Error::source(&err).unwrap().to_string(),
        "status 404 Not Found"
    );
}

#[tokio::test]
async fn misconfiguration_is_refused() {
    let client = HttpClient::new();
    let d = Discovery::from_static([]);
    let err = builder(&client, &d)
        .picker(Picker::by_name("hash").unwrap())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }));
    assert!(matches!(
        Picker::by_name("fastest"),
        Err(Error::Config { .. })
    ));
    let bad = client
        .endpoint(&d, "bad-name", encode, decode)
        .build()
        .unwrap_err();
    assert!(matches!(bad, Error::Discovery { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_calls_release_their_in_flight_count() {
    let servers = vec![
        TestServer::start_with("a_hangs", Duration::ZERO, true).await,
        TestServer::start("b", Duration::ZERO).await,
    ];
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::P2c(P2c::from_seed(8)))
        .build()
        .unwrap();
    // Calls stuck on `a_hangs`, then dropped by the caller's own timeout.
    let stuck = run(&ep, 20, 20, |_| Call::get("/hang"));
    let _ = tokio::time::timeout(Duration::from_millis(300), stuck).await;
    // Had the dropped calls kept counting, p2c (always comparing a_hangs with an idle b)
    // would never pick a_hangs again.
    let t = tally(&run(&ep, 200, 1, |_| Call::get("/id")).await);
    assert!(t.get("a_hangs").copied().unwrap_or(0) > 40, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_retry_deadline_does_not_panic() {
    let servers = vec![
        TestServer::start_with("bad", Duration::ZERO, true).await,
        TestServer::start("good", Duration::ZERO).await,
    ];
    // Duration::MAX means "no overall deadline"; now + MAX must not overflow.
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(Picker::RoundRobin(RoundRobin::new()))
        .retry(RetryPolicy::new(2, Duration::MAX))
        .build()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(ep.invoke(Call::get("/flaky")).await.unwrap(), "good");
    }
}
