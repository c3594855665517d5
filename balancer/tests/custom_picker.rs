//! A picker written by a user, through the public API only: `Pick` implemented outside the
//! crate and given to the endpoint builder, and built-in pickers passed as themselves.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;
use svckit_balancer::{Candidates, HttpClient, Pick, RetryPolicy, RoundRobin};
use svckit_registry::{Discovery, MemoryRegistry, Registry};

/// Always the instance with the lowest port. The ports are parsed once per set of
/// instances (the picker's state), and `builds` counts how often that happened.
#[derive(Debug, Default)]
struct LowestPort {
    builds: Arc<AtomicUsize>,
}

impl Pick for LowestPort {
    type State = Vec<u16>;

    fn build(&self, set: &Candidates<'_>) -> Vec<u16> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        set.iter()
            .map(|i| i.addr().rsplit(':').next().unwrap().parse().unwrap())
            .collect()
    }

    fn pick(&self, ports: &Vec<u16>, set: &Candidates<'_>) -> Option<usize> {
        assert_eq!(ports.len(), set.len(), "the state belongs to this set");
        (0..set.len()).min_by_key(|&i| ports[i])
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
async fn a_users_picker_sees_each_set_once_and_picks_from_it() {
    let servers = servers(3, Duration::ZERO).await;
    let mut by_port: Vec<&TestServer> = servers.iter().collect();
    by_port.sort_by_key(|s| s.addr.port());
    let registry = MemoryRegistry::new();
    let mut registrations = Vec::new();
    for s in &by_port {
        registrations.push(registry.register(s.instance()).await.unwrap());
    }
    let discovery = registry.discovery();
    wait_for(&discovery, 3).await;

    let picker = LowestPort::default();
    let builds = picker.builds.clone();
    let ep = builder(&HttpClient::new(), &discovery)
        .picker(picker)
        .build()
        .unwrap();
    for _ in 0..50 {
        assert_eq!(ep.invoke(Call::get("/id")).await.unwrap(), by_port[0].id);
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1, "one set, one build");

    // The lowest port leaves: the next call sees the new set, built once for all calls.
    registrations.remove(0).deregister().await.unwrap();
    wait_for(&discovery, 2).await;
    let results = run(&ep, 50, 8, |_| Call::get("/id")).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(id) if *id == by_port[1].id)),
        "{:?}",
        tally(&results)
    );
    assert_eq!(
        builds.load(Ordering::SeqCst),
        2,
        "one change, one more build"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_picker_falls_back_to_the_next_instance_on_retry() {
    let servers = servers(3, Duration::ZERO).await;
    let mut by_port: Vec<&TestServer> = servers.iter().collect();
    by_port.sort_by_key(|s| s.addr.port());
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(LowestPort::default())
        .retry(RetryPolicy::new(3, Duration::from_secs(5)))
        .build()
        .unwrap();
    by_port[0].kill();
    // Refused at connect: retried on another instance, which the default alternatives give.
    for _ in 0..10 {
        let id = ep.invoke(Call::get("/id")).await.unwrap();
        assert_ne!(id, by_port[0].id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_picker_is_passed_as_itself() {
    let servers = servers(3, Duration::ZERO).await;
    let ep = builder(&HttpClient::new(), &static_discovery(&servers))
        .picker(RoundRobin::new())
        .build()
        .unwrap();
    for k in 0..9 {
        assert_eq!(
            ep.invoke(Call::get("/id")).await.unwrap(),
            format!("s{}", k % 3)
        );
    }
}
