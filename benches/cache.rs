//! Cache benchmarks: a local hit (one thread at 1k/10k/100k keys, and two threads' total
//! throughput at 10k keys, then a summary of both from interleaved rounds; each for `get`
//! and, at 10k keys, for `get_with`), the hit path against golang/groupcache's `Group.Get`
//! in the same run (`hit_vs_go`), a peer fetch over loopback with 1 KiB values (latency
//! percentiles printed, and fetches per second with 16 in flight), singleflight with
//! 1,000 waiters on one cold key, and the hit path while another thread scrapes the
//! metrics (`hit_metrics`).
//!
//! Run with: `cargo bench --bench cache -- --warm-up-time 1 --measurement-time 3`
//! The hit path under scraping alone: `cargo bench --bench cache -- hit_metrics`
//! The comparison with Go alone: `cargo bench --bench cache -- hit_vs_go` (needs `go` and
//! golang/groupcache's source, Debian's golang-go and golang-github-golang-groupcache-dev).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use svckit::cache::{getter_fn, publish_metrics, BoxError, Cache, Group};

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/v1/item/{i:08}")).collect()
}

/// A group of 64 MiB (16 shards) holding `n` keys of 100-byte values.
fn warm_group(rt: &tokio::runtime::Runtime, keys: &[String]) -> (Cache, Group) {
    let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
    let group = cache
        .new_group(
            "bench",
            64 << 20,
            getter_fn(|_key: String| async { Ok::<_, BoxError>(Bytes::from(vec![7u8; 100])) }),
        )
        .build()
        .unwrap();
    rt.block_on(async {
        for k in keys {
            group.get(k).await.unwrap();
        }
    });
    assert_eq!(group.stats().main_cache.items, keys.len() as u64);
    (cache, group)
}

/// `keys` in a stride order (7919 is prime, so every key once per round) that defeats any
/// locality between consecutive gets.
fn scrambled(keys: Vec<String>) -> Vec<String> {
    let n = keys.len();
    (0..n).map(|i| keys[(i * 7919) % n].clone()).collect()
}

/// How a hit takes its value.
#[derive(Clone, Copy)]
enum Hit {
    /// `get`: an owned `Bytes`, dropped after the hit.
    Get,
    /// `get_with`: the value lent to a closure (its length read).
    GetWith,
}

/// `iters` hits cycling over `keys`, starting at `offset`.
async fn hits(group: &Group, keys: &[String], iters: u64, offset: usize, how: Hit) {
    let n = keys.len();
    let mut i = offset % n;
    for _ in 0..iters {
        match how {
            Hit::Get => {
                black_box(group.get(&keys[i]).await.unwrap());
            }
            Hit::GetWith => {
                black_box(group.get_with(&keys[i], |v| v.len()).await.unwrap());
            }
        }
        i += 1;
        if i == n {
            i = 0;
        }
    }
}

/// `iters` hits on each of `groups.len()` threads (thread i on `groups[i]`, starting at
/// its own offset into `ks`), started together; the slowest thread's time.
fn on_threads(groups: &[&Group], ks: &[String], iters: u64, how: Hit) -> Duration {
    let barrier = Barrier::new(groups.len());
    let elapsed: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .enumerate()
            .map(|(i, group)| {
                let barrier = &barrier;
                let offset = i * ks.len() / groups.len();
                s.spawn(move || {
                    let rt = current_thread();
                    barrier.wait();
                    let start = Instant::now();
                    rt.block_on(hits(group, ks, iters, offset, how));
                    start.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    elapsed.into_iter().max().unwrap()
}

/// Whether the command line's filter (criterion's positional argument, if any) asks for
/// `name`: unfiltered runs and filters with a `|`-separated part that is a part of `name`
/// (`local_hit`, `summary`, `peer_fetch|singleflight`) do.
fn wanted(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && a.parse::<f64>().is_err())
        .collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| f.split('|').any(|f| name.contains(f)))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One thread against two on one group (and two on separate groups, the control), measured
/// in alternating short rounds so that a slow spell of the machine hits all three alike.
/// Prints the median per-hit time on one thread and the median ratios of two threads' total
/// throughput to one thread's in the same round.
fn scaling_summary(group: &Group, other: &Group, ks: &[String], how: Hit, name: &str) {
    const ROUNDS: usize = 21;
    const ITERS: u64 = 1_000_000;
    let (mut one, mut shared, mut control) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let t1 = on_threads(&[group], ks, ITERS, how).as_secs_f64();
        let t2 = on_threads(&[group, group], ks, ITERS, how).as_secs_f64();
        let tc = on_threads(&[group, other], ks, ITERS, how).as_secs_f64();
        one.push(t1 * 1e9 / ITERS as f64);
        shared.push(2.0 * t1 / t2);
        control.push(2.0 * t1 / tc);
    }
    let best = one.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "cache/local_hit/{name}, 10k keys, {ROUNDS} interleaved rounds of {ITERS} hits per \
         thread: 1 thread {:.1} ns/hit (median; best {best:.1}); 2 threads on one group \
         {:.2}x one thread (median); on separate groups {:.2}x (median)",
        median(one),
        median(shared),
        median(control),
    );
}

fn local_hit(c: &mut Criterion) {
    if !["1_thread", "2_threads", "summary"]
        .iter()
        .any(|b| wanted(&format!("cache/local_hit/{b}")))
    {
        return;
    }
    let rt = current_thread();
    let mut g = c.benchmark_group("cache/local_hit");
    g.throughput(Throughput::Elements(1));
    for n in [1_000, 10_000, 100_000] {
        let ks = scrambled(keys(n));
        let (_cache, group) = warm_group(&rt, &ks);
        let ways: &[(&str, Hit)] = if n == 10_000 {
            &[("1_thread", Hit::Get), ("1_thread_get_with", Hit::GetWith)]
        } else {
            &[("1_thread", Hit::Get)]
        };
        for &(name, how) in ways {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        hits(&group, &ks, iters, 0, how).await;
                        start.elapsed()
                    })
                })
            });
        }
    }
    // Two threads, each doing `iters` hits: one "iteration" is two gets, so criterion's
    // elements/s is the total throughput to compare with one thread's. The control runs the
    // same on two separate groups: what the machine gives two threads sharing nothing.
    let ks = scrambled(keys(10_000));
    let (_cache, group) = warm_group(&rt, &ks);
    let (_cache2, group2) = warm_group(&rt, &ks);
    g.throughput(Throughput::Elements(2));
    for (name, second) in [
        ("2_threads", &group),
        ("2_threads_control_separate_groups", &group2),
    ] {
        g.bench_function(BenchmarkId::new(name, 10_000), |b| {
            b.iter_custom(|iters| on_threads(&[&group, second], &ks, iters, Hit::Get))
        });
    }
    g.bench_function(BenchmarkId::new("2_threads_get_with", 10_000), |b| {
        b.iter_custom(|iters| on_threads(&[&group, &group], &ks, iters, Hit::GetWith))
    });
    g.finish();
    if wanted("cache/local_hit/summary") {
        scaling_summary(&group, &group2, &ks, Hit::Get, "summary");
    }
    if wanted("cache/local_hit/summary_get_with") {
        scaling_summary(&group, &group2, &ks, Hit::GetWith, "summary_get_with");
    }
}

/// A thread that publishes the cache's metrics and renders the Prometheus text every
/// `every` (at once, then each period) until stopped, as a `/metrics` route scraped that
/// often would.
struct Scraper {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<(u32, Duration)>,
}

impl Scraper {
    fn start(every: Duration) -> Self {
        let handle = svckit_testing::metrics::install();
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let (mut scrapes, mut busy) = (0, Duration::ZERO);
            loop {
                let start = Instant::now();
                publish_metrics();
                black_box(handle.render());
                busy += start.elapsed();
                scrapes += 1;
                if stopped.recv_timeout(every) != Err(mpsc::RecvTimeoutError::Timeout) {
                    return (scrapes, busy);
                }
            }
        });
        Self { stop, thread }
    }

    /// Stops it; how many scrapes it made and their total time.
    fn stop(self) -> (u32, Duration) {
        self.stop.send(()).unwrap();
        self.thread.join().unwrap()
    }
}

/// One thread's `get` hits (10k keys, as `local_hit/summary`) with the Prometheus recorder
/// installed and a [`Scraper`] running every 100 ms, against the same hits with no scraper,
/// in alternating rounds whose order flips each round. Prints each round and the median of
/// the per-round ratios (scraped time over quiet time).
fn hit_metrics(_c: &mut Criterion) {
    if !wanted("cache/hit_metrics") {
        return;
    }
    const ROUNDS: usize = 9;
    const ITERS: u64 = 5_000_000;
    svckit_testing::metrics::install();
    let rt = current_thread();
    let ks = scrambled(keys(10_000));
    let (_cache, group) = warm_group(&rt, &ks);
    let ns = |t: Duration| t.as_secs_f64() * 1e9 / ITERS as f64;
    println!(
        "cache/hit_metrics: 10k keys, 100-byte values, {ITERS} gets per arm and round\n\
         round  quiet ns/hit  scraped ns/hit  scraped/quiet  scrapes  ms per scrape"
    );
    let (mut quiet, mut scraped, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (mut q, mut s, mut scrapes) = (0.0, 0.0, (0, Duration::ZERO));
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for scraping in order {
            let scraper = scraping.then(|| Scraper::start(Duration::from_millis(100)));
            let t = ns(on_threads(&[&group], &ks, ITERS, Hit::Get));
            if let Some(scraper) = scraper {
                scrapes = scraper.stop();
                s = t;
            } else {
                q = t;
            }
        }
        let per_scrape = scrapes.1.as_secs_f64() * 1e3 / f64::from(scrapes.0);
        println!(
            "{round:>5}  {q:>12.1}  {s:>14.1}  {:>13.3}  {:>7}  {per_scrape:>13.3}",
            s / q,
            scrapes.0
        );
        quiet.push(q);
        scraped.push(s);
        ratios.push(s / q);
    }
    let families = svckit_testing::metrics::scrape()
        .families
        .iter()
        .filter(|f| f.starts_with("svckit_cache_"))
        .count();
    assert_eq!(families, 12, "every cache family was published");
    println!(
        "cache/hit_metrics medians of {ROUNDS} rounds: quiet {:.1} ns/hit, scraped {:.1} \
         ns/hit; scraped/quiet {:.3} (limit 1.05)",
        median(quiet),
        median(scraped),
        median(ratios)
    );
}

/// Node B owns `keys` and serves them from memory; node A fetches them from B every time
/// (A keeps no hot copies). Returns A's group and the keys.
fn two_nodes(rt: &tokio::runtime::Runtime) -> (Cache, Cache, Group, Vec<String>) {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_url = format!("http://{}", listener.local_addr().unwrap());
        let a_url = "http://127.0.0.1:1".to_owned();
        let value = Bytes::from(vec![b'v'; 1024]);
        let getter = move |value: Bytes| {
            getter_fn(move |_key: String| {
                let value = value.clone();
                async move { Ok::<_, BoxError>(value) }
            })
        };
        let b = Cache::builder(&b_url).build().unwrap();
        let b_group = b
            .new_group("bench", 64 << 20, getter(value.clone()))
            .build()
            .unwrap();
        let a = Cache::builder(&a_url).build().unwrap();
        let a_group = a
            .new_group("bench", 64 << 20, getter(value))
            .hot_one_in(0)
            .build()
            .unwrap();
        for c in [&a, &b] {
            c.set_peers([&a_url, &b_url]).unwrap();
        }
        let app = b.router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let keys: Vec<String> = (0..)
            .map(|i| format!("/v1/item/{i:08}"))
            .filter(|k| a.owner(k).as_deref() == Some(b_url.as_str()))
            .take(1000)
            .collect();
        for k in &keys {
            b_group.get(k).await.unwrap();
        }
        (a, b, a_group, keys)
    })
}

fn peer_fetch(c: &mut Criterion) {
    if !wanted("cache/peer_fetch/1KiB/sequential/16_in_flight") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_a, _b, group, keys) = two_nodes(&rt);

    // Latency percentiles of sequential fetches (criterion reports the mean and median).
    let mut lat: Vec<Duration> = rt.block_on(async {
        let mut lat = Vec::with_capacity(5000);
        for i in 0..5000 {
            let start = Instant::now();
            black_box(group.get(&keys[i % keys.len()]).await.unwrap());
            lat.push(start.elapsed());
        }
        lat
    });
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "cache/peer_fetch/1KiB sequential, 5000 fetches: p50 {:?}  p99 {:?}  max {:?}",
        p(0.50),
        p(0.99),
        lat[lat.len() - 1]
    );
    assert_eq!(group.stats().peer_errors, 0);

    let mut g = c.benchmark_group("cache/peer_fetch");
    g.throughput(Throughput::Elements(1));
    g.bench_function("1KiB/sequential", |b| {
        let mut i = 0;
        b.to_async(&rt).iter(|| {
            i += 1;
            let k = &keys[i % keys.len()];
            let group = &group;
            async move { black_box(group.get(k).await.unwrap()) }
        })
    });
    g.bench_function("1KiB/16_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let next = Arc::new(AtomicU64::new(0));
                let start = Instant::now();
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..16 {
                    let (group, keys, next) = (group.clone(), keys.clone(), next.clone());
                    set.spawn(async move {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= iters {
                                break;
                            }
                            black_box(group.get(&keys[i as usize % keys.len()]).await.unwrap());
                        }
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.unwrap();
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    assert_eq!(group.stats().peer_errors, 0);
}

fn singleflight(c: &mut Criterion) {
    if !wanted("cache/singleflight/1000_waiters_one_cold_key") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let loads = Arc::new(AtomicU64::new(0));
    let cache = Cache::builder("http://127.0.0.1:1").build().unwrap();
    let counter = loads.clone();
    let group = cache
        .new_group(
            "bench",
            64 << 20,
            getter_fn(move |_key: String| {
                counter.fetch_add(1, Ordering::Relaxed);
                async {
                    tokio::task::yield_now().await;
                    Ok::<_, BoxError>(Bytes::from_static(b"value"))
                }
            }),
        )
        .build()
        .unwrap();
    let mut g = c.benchmark_group("cache/singleflight");
    g.throughput(Throughput::Elements(1000));
    let mut n = 0u64;
    let mut rounds = 0u64;
    g.bench_function("1000_waiters_one_cold_key", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    rounds += 1;
                    let key: Arc<str> = Arc::from(format!("cold-{n}"));
                    let start = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..1000 {
                        let (group, key) = (group.clone(), key.clone());
                        set.spawn(async move { group.get(&key).await.map(|v| v.len()) });
                    }
                    while let Some(r) = set.join_next().await {
                        black_box(r.unwrap().unwrap());
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
    assert_eq!(
        loads.load(Ordering::Relaxed),
        rounds,
        "one load per cold key"
    );
}

/// Builds `benches/go/groupcache_get.go` in GOPATH mode against Debian's golang/groupcache.
fn build_go_bench() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/go/groupcache_get.go");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-bench");
    svckit_testing::go::build_groupcache_program(&source, &dir, "groupcache_get")
        .unwrap_or_else(|why| panic!("{why}"))
}

/// One run of the Go program: nanoseconds per `Group.Get` hit.
fn go_ns_per_hit(bin: &Path, iters: u64) -> f64 {
    let out = Command::new(bin)
        .arg("-iters")
        .arg(iters.to_string())
        .output()
        .expect("run the Go bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// golang/groupcache's `Group.Get` (1,000 keys, `AllocatingByteSliceSink`) and ours, in
/// alternating rounds of one process: per round, the Go program's time per hit, then ours
/// for `get` and `get_with` on one thread, two threads on one group and two on separate
/// groups (the control). Prints each round and the medians of the per-round ratios.
fn hit_vs_go(_c: &mut Criterion) {
    // Not in unfiltered runs: it needs Go.
    if !std::env::args().skip(1).any(|a| a.contains("vs_go")) {
        return;
    }
    const ROUNDS: usize = 7;
    const ITERS: u64 = 1_000_000;
    let go = build_go_bench();
    let rt = current_thread();
    let ks = scrambled(keys(1_000));
    let (_cache, group) = warm_group(&rt, &ks);
    let (_cache2, other) = warm_group(&rt, &ks);
    let ns = |t: Duration| t.as_secs_f64() * 1e9 / ITERS as f64;
    let mut cols: [Vec<f64>; 7] = Default::default();
    println!(
        "cache/hit_vs_go: 1,000 keys, 100-byte values, {ITERS} hits per thread and round\n\
         round  go ns  get ns  with ns  get/go  with/go  get 2t/1t (control)  with 2t/1t (control)"
    );
    for round in 1..=ROUNDS {
        let go_ns = go_ns_per_hit(&go, ITERS);
        let mut row = vec![go_ns];
        let mut scale = Vec::new();
        for how in [Hit::Get, Hit::GetWith] {
            let t1 = on_threads(&[&group], &ks, ITERS, how);
            let t2 = on_threads(&[&group, &group], &ks, ITERS, how);
            let tc = on_threads(&[&group, &other], &ks, ITERS, how);
            row.push(ns(t1));
            scale.push(2.0 * t1.as_secs_f64() / t2.as_secs_f64());
            scale.push(2.0 * t1.as_secs_f64() / tc.as_secs_f64());
        }
        let vals = [
            row[1] / go_ns,
            row[2] / go_ns,
            scale[0],
            scale[1],
            scale[2],
            scale[3],
            go_ns,
        ];
        println!(
            "{round:>5}  {go_ns:>5.1}  {:>6.1}  {:>7.1}  {:>6.3}  {:>7.3}  {:>8.2}x ({:.2}x)  {:>9.2}x ({:.2}x)",
            row[1], row[2], vals[0], vals[1], vals[2], vals[3], vals[4], vals[5]
        );
        for (col, v) in cols.iter_mut().zip(vals) {
            col.push(v);
        }
    }
    let [get, with, get2, getc, with2, withc, go_ns] = cols.map(median);
    println!(
        "cache/hit_vs_go medians of {ROUNDS} rounds: go {go_ns:.1} ns/hit; get {get:.3}x go \
         (limit 0.45); get_with {with:.3}x go (limit 0.35); two threads on one group: get \
         {get2:.2}x, get_with {with2:.2}x one thread (limit 1.5; control {getc:.2}x, {withc:.2}x)"
    );
}

criterion_group!(
    benches,
    local_hit,
    hit_vs_go,
    peer_fetch,
    singleflight,
    hit_metrics
);
criterion_main!(benches);
