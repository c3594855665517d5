//! Discovery propagation on a loopback etcd: the time from `register` returning to the
//! instance appearing in ANOTHER registry client's snapshot, and from `deregister` returning
//! to its disappearance (and the same from the calls, including their round trips). Prints
//! p50/p99 over 300 registrations, then lets criterion measure register call → visible.
//!
//! Run with: `cargo bench --bench discovery` (needs `etcd` on the PATH: `apt-get install -y etcd-server`).

use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use svckit::registry::{EtcdOptions, EtcdRegistry, Instance, Registry, ServiceWatch};

const ROUNDS: usize = 300;

async fn clients(endpoint: &str) -> (EtcdRegistry, EtcdRegistry) {
    let connect = || EtcdRegistry::connect(EtcdOptions::new([endpoint.to_owned()]));
    (connect().await.unwrap(), connect().await.unwrap())
}

/// Waits until `watch` shows (or no longer shows) `id`; returns when it did.
async fn until(watch: &mut ServiceWatch, id: &str, present: bool) -> Instant {
    loop {
        if watch.mark_seen().iter().any(|i| i.id() == id) == present {
            return Instant::now();
        }
        watch.changed().await.unwrap();
    }
}

/// Latencies of one round.
struct Round {
    /// `register` returned → visible to the other client.
    appear: Duration,
    /// `deregister` returned → gone from the other client's view.
    disappear: Duration,
    /// `register` called → visible (includes the grant and put round trips).
    appear_from_call: Duration,
    /// `deregister` called → gone (includes the revoke round trip).
    disappear_from_call: Duration,
}

/// One round: register, wait until visible, deregister, wait until gone.
async fn round(server: &EtcdRegistry, watch: &mut ServiceWatch, n: usize) -> Round {
    let id = format!("bench{n}");
    let instance = Instance::new(id.as_str(), "benchsvc", "127.0.0.1:9").unwrap();
    let called = Instant::now();
    let reg = server.register(instance).await.unwrap();
    let registered = Instant::now();
    let seen = until(watch, &id, true).await;
    let deregister_called = Instant::now();
    reg.deregister().await.unwrap();
    let deregistered = Instant::now();
    let gone = until(watch, &id, false).await;
    Round {
        appear: seen.saturating_duration_since(registered),
        disappear: gone.saturating_duration_since(deregistered),
        appear_from_call: seen - called,
        disappear_from_call: gone - deregister_called,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "discovery/{what}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples[samples.len() - 1],
    );
}

fn propagation(c: &mut Criterion) {
    let etcd = svckit_testing::Etcd::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, watcher) = rt.block_on(clients(&etcd.endpoint()));
    let mut watch = rt.block_on(async {
        let discovery = watcher.discovery();
        let watch = discovery.watch("benchsvc").unwrap();
        // Wait for the first listing.
        while discovery.state() != svckit::registry::DiscoveryState::Live {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        watch
    });

    // The percentile run.
    let rounds: Vec<Round> = rt.block_on(async {
        let mut rounds = Vec::with_capacity(ROUNDS);
        for n in 0..ROUNDS {
            rounds.push(round(&server, &mut watch, n).await);
        }
        rounds
    });
    report(
        "register_to_visible",
        rounds.iter().map(|r| r.appear).collect(),
    );
    report(
        "deregister_to_gone",
        rounds.iter().map(|r| r.disappear).collect(),
    );
    report(
        "register_call_to_visible",
        rounds.iter().map(|r| r.appear_from_call).collect(),
    );
    report(
        "deregister_call_to_gone",
        rounds.iter().map(|r| r.disappear_from_call).collect(),
    );

    // Under criterion's statistics: `register` called → visible.
    let mut group = c.benchmark_group("discovery");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut n = ROUNDS;
    group.bench_function("register_call_to_visible", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    total += round(&server, &mut watch, n).await.appear_from_call;
                }
                total
            })
        })
    });
    group.finish();
    drop(etcd);
}

criterion_group!(benches, propagation);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
