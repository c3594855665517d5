//! Calls the product service by name through a balancer Endpoint: discovery from etcd, the
//! chosen picker, a pooled HTTP client, retries on another instance when that is safe.
//!
//! Run with: `cargo run --example product_client -- --service productservice --balance round_robin --requests 100`
//! (`--duration SECS` instead of `--requests`, `--concurrency C`, `--etcd 127.0.0.1:2379`, `--json`).
//!
//! Prints requests, successes, failures by kind, calls per instance and p50/p99 latency
//! (`--json`: the same as one JSON object on the last line). Exits 0 only without failures.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use svckit::balancer::{Endpoint, Error as CallError, HttpClient, Picker, RetryPolicy};
use svckit::registry::{Discovery, Registry};

/// Flags of the client.
#[derive(Debug, Parser)]
struct Args {
    /// The service name to call.
    #[arg(long, default_value = "productservice")]
    service: String,
    /// The picker: random, round_robin, hash or p2c.
    #[arg(long, default_value = "round_robin")]
    balance: String,
    /// Number of requests to send.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,
    /// Send requests for this many seconds instead of a fixed number.
    #[arg(long)]
    duration: Option<f64>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// etcd endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd: String,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// A product request: `GET /prod/<id>`.
#[derive(Debug, Clone, Copy)]
struct ProductRequest {
    id: u64,
}

/// A product reply: the body and the instance that served it.
#[derive(Debug, Clone)]
struct ProductReply {
    body: String,
    served_by: String,
}

/// The product service answered something other than 200.
#[derive(Debug, thiserror::Error)]
#[error("product service answered {0}")]
struct BadStatus(http::StatusCode);

fn encode(req: ProductRequest) -> Result<http::Request<Bytes>, http::Error> {
    http::Request::get(format!("/prod/{}", req.id)).body(Bytes::new())
}

fn decode(resp: http::Response<Bytes>) -> Result<ProductReply, BadStatus> {
    if resp.status() != http::StatusCode::OK {
        return Err(BadStatus(resp.status()));
    }
    let served_by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    Ok(ProductReply {
        body: String::from_utf8_lossy(resp.body()).into_owned(),
        served_by,
    })
}

/// Builds the product Endpoint over `discovery` with the picker named `balance`.
fn product_endpoint(
    discovery: &Discovery,
    service: &str,
    balance: &str,
) -> Result<Endpoint<ProductRequest, ProductReply>, CallError> {
    HttpClient::new()
        .endpoint(discovery, service, encode, decode)
        .picker(Picker::by_name(balance)?)
        .hash_key(|req: &ProductRequest| req.id.to_be_bytes())
        .timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(3, Duration::from_secs(5)))
        .build()
}

/// The kind of a failed call, for the summary.
fn failure_kind(e: &CallError) -> &'static str {
    match e {
        CallError::NoInstances { .. } => "no_instances",
        _ if e.is_timeout() => "timeout",
        CallError::Transport { .. } => "transport",
        CallError::Decode { .. } => "bad_response",
        CallError::RetriesExhausted { .. } => "retries_exhausted",
        _ => "other",
    }
}

/// What a run counted.
#[derive(Debug, Default)]
struct Tally {
    successes: u64,
    failures: BTreeMap<&'static str, u64>,
    per_instance: BTreeMap<String, u64>,
    latencies: Histogram,
}

impl Tally {
    fn summary(&self) -> serde_json::Value {
        let failures: u64 = self.failures.values().sum();
        serde_json::json!({
            "requests": self.successes + failures,
            "successes": self.successes,
            "failures": failures,
            "failures_by_kind": self.failures,
            "per_instance": self.per_instance,
            "p50_ms": self.latencies.percentile(0.50) * 1e3,
            "p99_ms": self.latencies.percentile(0.99) * 1e3,
        })
    }
}

/// Sub-buckets per power of two: about 1.5 % resolution.
const SUB_BITS: u32 = 6;

/// Latencies in log-linear nanosecond buckets: fixed memory however long the run.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; 64 << SUB_BITS],
            total: 0,
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < 1 << SUB_BITS {
            return nanos as usize;
        }
        let shift = 63 - nanos.leading_zeros() - SUB_BITS;
        let top = (nanos >> shift) as usize; // in 64..128
        ((shift as usize + 1) << SUB_BITS) + top - (1 << SUB_BITS)
    }

    fn lower_bound(index: usize) -> u64 {
        if index < 1 << SUB_BITS {
            return index as u64;
        }
        let shift = (index >> SUB_BITS) - 1;
        let top = (index & ((1 << SUB_BITS) - 1)) + (1 << SUB_BITS);
        (top as u64) << shift
    }

    fn record(&mut self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.total += 1;
    }

    /// The `p` quantile in seconds (the middle of its bucket); 0 when empty.
    fn percentile(&self, p: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total - 1) as f64 * p).round() as u64 + 1;
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = (Self::lower_bound(i), Self::lower_bound(i + 1));
                return (low + high) as f64 / 2e9;
            }
        }
        0.0
    }
}

/// Sends requests through `endpoint` with `concurrency` workers until `requests` were sent or
/// `until` passed.
async fn drive(
    endpoint: Endpoint<ProductRequest, ProductReply>,
    concurrency: usize,
    requests: Option<u64>,
    until: Option<Instant>,
) -> Tally {
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (endpoint, next, tally) = (endpoint.clone(), next.clone(), tally.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if requests.is_some_and(|r| n >= r) || until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                let id = n % 1000;
                let start = Instant::now();
                let result = endpoint.invoke(ProductRequest { id }).await;
                let took = start.elapsed();
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match result {
                    Ok(reply) if reply.body == format!("get product byID:{id}") => {
                        t.successes += 1;
                        t.latencies.record(took);
                        *t.per_instance.entry(reply.served_by).or_default() += 1;
                    }
                    Ok(_) => *t.failures.entry("wrong_body").or_default() += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "call failed");
                        *t.failures.entry(failure_kind(&e)).or_default() += 1;
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    Arc::try_unwrap(tally)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    common::init_tracing();
    let args = Args::parse();
    if args.requests.is_none() && args.duration.is_none() {
        common::fail("give --requests N or --duration SECS");
    }
    let until = match args.duration {
        Some(secs) if secs > 0.0 => match Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| Instant::now().checked_add(d))
        {
            Some(until) => Some(until),
            None => common::fail("--duration is too large"),
        },
        Some(_) => common::fail("--duration must be a positive number of seconds"),
        None => None,
    };
    let registry = common::connect_etcd(common::etcd_options(&args.etcd), &args.etcd).await;
    let discovery = registry.discovery();
    let endpoint = product_endpoint(&discovery, &args.service, &args.balance)
        .unwrap_or_else(|e| common::fail(e));
    // Give the first listing a moment so a fresh client does not start on an empty view.
    if let Ok(mut watch) = discovery.watch(&args.service) {
        if watch.snapshot().is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(3), watch.changed()).await;
        }
    }
    let tally = drive(endpoint, args.concurrency, args.requests, until).await;
    let summary = tally.summary();
    println!("service:    {} (picker {})", args.service, args.balance);
    println!("requests:   {}", summary["requests"]);
    println!("successes:  {}", summary["successes"]);
    println!(
        "failures:   {} {}",
        summary["failures"], summary["failures_by_kind"]
    );
    for (instance, calls) in &tally.per_instance {
        println!("  {instance}: {calls}");
    }
    println!(
        "latency:    p50 {:.3} ms, p99 {:.3} ms",
        summary["p50_ms"].as_f64().unwrap_or_default(),
        summary["p99_ms"].as_f64().unwrap_or_default()
    );
    if args.json {
        println!("{summary}");
    }
    let failed = summary["failures"].as_u64().unwrap_or(1) != 0;
    drop(registry);
    std::process::exit(i32::from(failed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use svckit::registry::Instance;

    #[test]
    fn encode_builds_the_product_path() {
        let req = encode(ProductRequest { id: 42 }).unwrap();
        assert_eq!(req.method(), http::Method::GET);
        assert_eq!(req.uri().path(), "/prod/42");
    }

    #[test]
    fn decode_reads_body_and_instance_and_refuses_other_statuses() {
        let ok = http::Response::builder()
            .header("x-served-by", "inst7")
            .body(Bytes::from_static(b"get product byID:3"))
            .unwrap();
        let reply = decode(ok).unwrap();
        assert_eq!(
            (reply.body.as_str(), reply.served_by.as_str()),
            ("get product byID:3", "inst7")
        );
        let missing = http::Response::builder()
            .status(404)
            .body(Bytes::new())
            .unwrap();
        assert!(matches!(decode(missing), Err(BadStatus(s)) if s == 404));
    }

    #[test]
    fn every_picker_name_builds_and_unknown_ones_fail() {
        let d =
            Discovery::from_static([Instance::new("a", "productservice", "127.0.0.1:1").unwrap()]);
        for name in ["random", "round_robin", "hash", "p2c"] {
            assert!(
                product_endpoint(&d, "productservice", name).is_ok(),
                "{name}"
            );
        }
        assert!(product_endpoint(&d, "productservice", "fastest").is_err());
        assert!(product_endpoint(&d, "product-service", "random").is_err());
    }

    #[test]
    fn summary_percentiles() {
        let mut t = Tally {
            successes: 100,
            ..Tally::default()
        };
        for ms in 1..=100 {
            t.latencies.record(Duration::from_millis(ms));
        }
        t.failures.insert("timeout", 2);
        let s = t.summary();
        assert_eq!(s["requests"], 102);
        assert_eq!(s["failures"], 2);
        assert_eq!(s["p50_ms"].as_f64().unwrap().round(), 51.0);
        assert_eq!(s["p99_ms"].as_f64().unwrap().round(), 99.0);
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_tight() {
        for v in [
            0u64,
            1,
            63,
            64,
            65,
            127,
            128,
            1000,
            123_456_789,
            u64::MAX / 3,
        ] {
            let i = Histogram::index(v);
            let (low, high) = (Histogram::lower_bound(i), Histogram::lower_bound(i + 1));
            assert!(low <= v && v < high, "{v} in [{low}, {high})");
            assert!(
                (high - low) as f64 <= (v as f64 / 64.0).max(1.0),
                "{v}: too wide"
            );
        }
        assert_eq!(Histogram::default().percentile(0.5), 0.0);
    }
}
