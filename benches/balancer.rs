//! Balancer benchmarks: pick cost of the four pickers, ring lookup (hashing a 32-byte key
//! included), and the overhead of an HTTP Endpoint against a raw pooled hyper client.
//!
//! Run with: `cargo bench --bench balancer -- --warm-up-time 1 --measurement-time 3`
//! (instruction counts per call: see `count_calls`).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use svckit::balancer::{Endpoint, HttpClient, P2c, Picker, Random, Ring, RoundRobin};
use svckit::cache::GroupcacheRing;
use svckit::registry::{Discovery, Instance};

const SIZES: [usize; 3] = [3, 100, 1000];

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:032x}")).collect()
}

/// 1024 distinct 32-byte keys (a hex id each, like a cache key or a user id).
fn keys() -> Vec<[u8; 32]> {
    (0..1024u64)
        .map(|i| {
            let mut k = [0u8; 32];
            k.copy_from_slice(format!("{:032x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).as_bytes());
            k
        })
        .collect()
}

fn pickers(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    let keys = keys();
    for n in SIZES {
        let random = Random::from_seed(1);
        g.bench_with_input(BenchmarkId::new("random", n), &n, |b, &n| {
            b.iter(|| random.pick(black_box(n)))
        });
        let rr = RoundRobin::new();
        g.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, &n| {
            b.iter(|| rr.pick(black_box(n)))
        });
        let p2c = P2c::from_seed(1);
        let loads: Vec<AtomicUsize> = (0..n).map(|i| AtomicUsize::new(i % 7)).collect();
        g.bench_with_input(BenchmarkId::new("p2c", n), &loads, |b, loads| {
            b.iter(|| p2c.pick(black_box(loads)))
        });
        let ring = Ring::new(&names(n), 160);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::new("hash_160", n), &ring, |b, ring| {
            b.iter(|| {
                i = (i + 1) & 1023;
                ring.owner(black_box(&keys[i]))
            })
        });
    }
    g.finish();
}

fn ring_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_lookup");
    let keys = keys();
    for vnodes in [50, 160] {
        for n in [8, 32, 128, 512] {
            let ring = Ring::new(&names(n), vnodes);
            let mut i = 0usize;
            g.bench_with_input(
                BenchmarkId::new(format!("vnodes_{vnodes}"), n),
                &ring,
                |b, ring| {
                    b.iter(|| {
                        i = (i + 1) & 1023;
                        ring.owner(black_box(&keys[i]))
                    })
                },
            );
        }
    }
    g.finish();
}

/// The next ring after one instance left and one joined, made from the previous ring by one
/// merge (`Ring::with_changes`), against building it afresh (`Ring::new`): 1,000 and 5,000
/// instances × 160 points. Issue 15's limit: 5 ms at 5,000 × 160. Also the cache's peer
/// ring (`GroupcacheRing::with_peers`, 50 points per peer) after one peer left and one joined.
fn ring_rebuild(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_rebuild");
    g.sample_size(20);
    for n in [1_000usize, 5_000] {
        let names = names(n);
        let ring = Ring::new(&names, 160);
        let joined: std::sync::Arc<str> = std::sync::Arc::from("joined_node");
        g.bench_with_input(BenchmarkId::new("merge_160", n), &ring, |b, ring| {
            b.iter(|| ring.with_changes(|i| i != n / 2, [joined.clone()]))
        });
        let mut next = names.clone();
        next.remove(n / 2);
        next.push("joined_node".into());
        g.bench_with_input(BenchmarkId::new("afresh_160", n), &next, |b, next| {
            b.iter(|| Ring::new(black_box(next), 160))
        });
    }
    for n in [1_000usize, 5_000] {
        let urls: Vec<std::sync::Arc<str>> = (0..n)
            .map(|i| {
                std::sync::Arc::from(format!(
                    "http://10.{}.{}.{}:8080",
                    i / 65536,
                    (i / 256) % 256,
                    i % 256
                ))
            })
            .collect();
        let mut sorted = urls.clone();
        sorted.sort();
        let ring = GroupcacheRing::new(50).with_peers(sorted.clone());
        let mut next = sorted.clone();
        next.remove(n / 2);
        next.push(std::sync::Arc::from("http://99.0.0.1:8080"));
        g.bench_with_input(
            BenchmarkId::new("cache_peers_merge_50", n),
            &next,
            |b, next| b.iter(|| ring.with_peers(next.clone())),
        );
    }
    g.finish();
}

/// A loopback HTTP/1 server answering `ok` on every path.
async fn server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn endpoint_overhead(c: &mut Criterion) {
    // Two workers: calls cross threads as in a real service.
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    overhead(c, "endpoint_overhead", &multi);
    // One thread for client and server: the CPU cost per call, with little scheduling noise.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    overhead(c, "endpoint_overhead_current_thread", &single);
}

type RawClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// The raw side: one pooled hyper-util legacy client, `TCP_NODELAY` on.
fn raw_client() -> RawClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// One raw call: `GET uri` (parsed once), body collected.
async fn raw_get(raw: RawClient, uri: http::Uri) -> Bytes {
    let req = http::Request::get(uri)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = raw
        .request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    body.to_bytes()
}

/// The Endpoint side: static discovery of `addr`, p2c, 5 s timeout. Like the raw side, the
/// encoder clones a URI parsed once (here the path; the Endpoint adds the picked instance's
/// authority).
fn endpoint(addr: SocketAddr) -> Endpoint<(), Bytes> {
    let discovery =
        Discovery::from_static([Instance::new("b0", "bench", addr.to_string()).unwrap()]);
    let path = http::Uri::from_static("/id");
    HttpClient::new()
        .endpoint(
            &discovery,
            "bench",
            move |()| http::Request::get(path.clone()).body(Bytes::new()),
            |r: http::Response<Bytes>| Ok::<_, Infallible>(r.into_body()),
        )
        .picker(Picker::P2c(P2c::from_seed(1)))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn overhead(c: &mut Criterion, group: &str, rt: &tokio::runtime::Runtime) {
    let addr = rt.block_on(server());
    let _guard = rt.enter();

    let raw = raw_client();
    let uri: http::Uri = format!("http://{addr}/id").parse().unwrap();
    let raw_call = move || raw_get(raw.clone(), uri.clone());
    let ep = endpoint(addr);
    let ep_call = move || {
        let ep = ep.clone();
        async move { ep.invoke(()).await.unwrap() }
    };

    let mut g = c.benchmark_group(group);
    // Raw and Endpoint calls alternate inside every measurement (criterion gets the time of
    // one of the two), so both see the same machine state and noise: an honest A/B on a
    // shared box. The ratio over all interleaved calls is printed after each pair.
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_hyper/sequential", |b| {
        b.to_async(rt)
            .iter_custom(|iters| alternate(iters, &raw_call, &ep_call, false))
    });
    g.bench_function("endpoint_p2c/sequential", |b| {
        b.to_async(rt)
            .iter_custom(|iters| alternate(iters, &raw_call, &ep_call, true))
    });
    report_ratio(&format!("{group}/sequential"));
    const BATCH: usize = 32;
    let raw_batch = || futures_join((0..BATCH).map(|_| tokio::spawn(raw_call())));
    let ep_batch = || futures_join((0..BATCH).map(|_| tokio::spawn(ep_call())));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("raw_hyper/concurrent_32", |b| {
        b.to_async(rt)
            .iter_custom(|iters| alternate(iters, &raw_batch, &ep_batch, false))
    });
    g.bench_function("endpoint_p2c/concurrent_32", |b| {
        b.to_async(rt)
            .iter_custom(|iters| alternate(iters, &raw_batch, &ep_batch, true))
    });
    report_ratio(&format!("{group}/concurrent_32"));
    g.finish();
}

/// Time spent in raw and in Endpoint calls over every interleaved pair of a group, so the
/// ratio printed at the end of the group compares both under exactly the same conditions.
static RAW_NS: AtomicU64 = AtomicU64::new(0);
static ENDPOINT_NS: AtomicU64 = AtomicU64::new(0);

/// Runs a raw and an Endpoint call (or batch) alternately `iters` times, recording both
/// durations; returns the one this benchmark reports (`endpoint_timed` picks which).
async fn alternate<A, B, FA, FB>(
    iters: u64,
    raw: &A,
    endpoint: &B,
    endpoint_timed: bool,
) -> Duration
where
    A: Fn() -> FA,
    B: Fn() -> FB,
    FA: std::future::Future,
    FB: std::future::Future,
{
    let (mut raw_t, mut ep_t) = (Duration::ZERO, Duration::ZERO);
    for i in 0..iters {
        // Alternate which goes first, so neither always follows the other.
        for first_raw in [i % 2 == 0, i % 2 == 1] {
            let start = Instant::now();
            if first_raw {
                black_box(raw().await);
                raw_t += start.elapsed();
            } else {
                black_box(endpoint().await);
                ep_t += start.elapsed();
            }
        }
    }
    RAW_NS.fetch_add(raw_t.as_nanos() as u64, Ordering::Relaxed);
    ENDPOINT_NS.fetch_add(ep_t.as_nanos() as u64, Ordering::Relaxed);
    if endpoint_timed {
        ep_t
    } else {
        raw_t
    }
}

/// Prints and resets the Endpoint/raw throughput ratio of the interleaved calls so far.
fn report_ratio(label: &str) {
    let raw = RAW_NS.swap(0, Ordering::Relaxed) as f64;
    let ep = ENDPOINT_NS.swap(0, Ordering::Relaxed) as f64;
    if ep > 0.0 {
        println!(
            "{label}: Endpoint calls/s over raw hyper calls/s (interleaved) = {:.3}",
            raw / ep
        );
    }
}

/// Awaits every spawned call (a failed call panics and fails the benchmark).
async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) {
    let handles: Vec<_> = handles.collect();
    for h in handles {
        black_box(h.await.unwrap());
    }
}

/// Instruction counts instead of criterion: with `SVCKIT_BENCH_CALLS=<n>` and
/// `SVCKIT_BENCH_SIDE=raw|endpoint` set, the binary makes `n` sequential calls of that side on
/// a current-thread runtime (the same server, client and Endpoint as above) and exits. Under
/// `valgrind --tool=callgrind` at two values of `n`, the difference in instructions divided by
/// the difference in calls is the cost of one call, start-up excluded.
fn count_calls() -> bool {
    let Ok(n) = std::env::var("SVCKIT_BENCH_CALLS") else {
        return false;
    };
    let n: usize = n.parse().expect("SVCKIT_BENCH_CALLS is a number");
    let side = std::env::var("SVCKIT_BENCH_SIDE").unwrap_or_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = server().await;
        let uri: http::Uri = format!("http://{addr}/id").parse().unwrap();
        let (raw, ep) = (raw_client(), endpoint(addr));
        for _ in 0..n {
            match side.as_str() {
                "raw" => black_box(raw_get(raw.clone(), uri.clone()).await),
                "endpoint" => black_box(ep.invoke(()).await.unwrap()),
                other => panic!("SVCKIT_BENCH_SIDE is raw or endpoint, not {other:?}"),
            };
        }
    });
    true
}

criterion_group!(
    benches,
    pickers,
    ring_lookup,
    ring_rebuild,
    endpoint_overhead
);

fn main() {
    if count_calls() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
