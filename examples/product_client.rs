//! Calls the product service by name through a balancer Endpoint: discovery from etcd, the
//! chosen picker, a pooled HTTP client, retries on another instance when that is safe.
//!
//! Run with: `cargo run --example product_client -- --service productservice --balance round_robin --requests 100`
//! (`--duration SECS` instead of `--requests`, `--concurrency C`, `--etcd 127.0.0.1:2379`, `--json`,
//! `--status-listen 127.0.0.1:9090` to serve `/_svckit/status` and `/metrics` while it runs).
//!
//! Prints requests, successes, failures by kind, calls per instance and p50/p99 latency
//! (`--json`: the same as one JSON object on the last line). Exits 0 only without failures.

mod common;

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use svckit::balancer::{Endpoint, Error as CallError, HttpClient, Picker, RetryPolicy};
use svckit::registry::{Discovery, EtcdRegistry, Registry};
use svckit::status::StatusPage;
use svckit_testing::load::{Failure, Load, LoadOptions};

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
    #[arg(
        long,
        conflicts_with = "duration",
        required_unless_present = "duration"
    )]
    requests: Option<u64>,
    /// Send requests for this many seconds instead of a fixed number.
    #[arg(long, value_parser = seconds)]
    duration: Option<Duration>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// etcd endpoints, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2379")]
    etcd: String,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Serve `/_svckit/status` and `/metrics` on this address while the calls run.
    #[arg(long)]
    status_listen: Option<std::net::SocketAddr>,
    /// Keep serving them this many seconds after the calls (for a last scrape).
    #[arg(long, value_parser = seconds, requires = "status_listen")]
    linger: Option<Duration>,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs() < 365 * 24 * 3600)
        .ok_or_else(|| "a positive number of seconds below a year".to_owned())
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

/// Encodes a product id as `GET /prod/<id>` (go-kit's EncodeRequestFunc).
fn encode(id: u64) -> Result<http::Request<Bytes>, http::Error> {
    http::Request::get(format!("/prod/{id}")).body(Bytes::new())
}

/// Decodes the reply (go-kit's DecodeResponseFunc).
fn decode(resp: http::Response<Bytes>) -> Result<ProductReply, BadStatus> {
    if resp.status() != http::StatusCode::OK {
        return Err(BadStatus(resp.status()));
    }
    let served_by = resp
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok());
    Ok(ProductReply {
        served_by: served_by.unwrap_or("unknown").to_owned(),
        body: String::from_utf8_lossy(resp.body()).into_owned(),
    })
}

/// The product Endpoint over `discovery` with the picker named `balance`.
fn product_endpoint(
    discovery: &Discovery,
    service: &str,
    balance: &str,
) -> Result<Endpoint<u64, ProductReply>, CallError> {
    HttpClient::new()
        .endpoint(discovery, service, encode, decode)
        .picker(Picker::by_name(balance)?)
        .hash_key(|id: &u64| id.to_be_bytes())
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::init_telemetry("product_client");
    let args = Args::parse();
    let registry = EtcdRegistry::connect(common::etcd_options(&args.etcd)?)
        .await
        .with_context(|| format!("cannot connect to etcd at {}", args.etcd))?;
    let discovery = registry.discovery();
    let get_product = product_endpoint(&discovery, &args.service, &args.balance)?;
    if let Some(addr) = args.status_listen {
        // What this client sees and does: the instances, its Endpoint's calls, its metrics.
        let app = StatusPage::new(&registry)
            .title("product_client")
            .router()
            .merge(common::metrics_route());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    // Give the first listing a moment so a fresh client does not start on an empty view.
    let mut instances = discovery.watch(&args.service)?;
    if instances.snapshot().is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(3), instances.changed()).await;
    }

    // Call it: ids 0..1000 over and over, from `--concurrency` tasks.
    let mut options = LoadOptions::new().workers(args.concurrency);
    if let Some(n) = args.requests {
        options = options.calls(n);
    }
    if let Some(d) = args.duration {
        options = options.duration(d);
    }
    let report = Load::start(options, move |n| {
        let (get_product, id) = (get_product.clone(), n % 1000);
        async move {
            match get_product.invoke(id).await {
                // The first line names the product; the second is the live config's (it may
                // change during a run).
                Ok(reply)
                    if reply.body.lines().next()
                        == Some(format!("get product byID:{id}").as_str()) =>
                {
                    Ok(reply.served_by)
                }
                Ok(reply) => Err(Failure::new("wrong_body", reply.body)),
                Err(e) => Err(Failure::new(failure_kind(&e), e)),
            }
        }
    })
    .wait()
    .await;

    let summary = report.to_json();
    println!("service:    {} (picker {})", args.service, args.balance);
    println!("requests:   {}", report.calls);
    println!("successes:  {}", report.calls - report.failed);
    println!(
        "failures:   {} {}",
        report.failed, summary["failures_by_kind"]
    );
    for (instance, calls) in &report.served {
        println!("  {instance}: {calls}");
    }
    let (p50, p99) = (summary["p50_ms"].as_f64(), summary["p99_ms"].as_f64());
    println!(
        "latency:    p50 {:.3} ms, p99 {:.3} ms",
        p50.unwrap_or_default(),
        p99.unwrap_or_default()
    );
    if args.json {
        println!("{summary}");
    }
    if let Some(linger) = args.linger {
        tokio::time::sleep(linger).await;
    }
    if report.failed > 0 {
        bail!(
            "{} of {} calls failed: {:?}",
            report.failed,
            report.calls,
            report.errors
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use svckit::registry::Instance;

    #[test]
    fn encode_builds_the_product_path() {
        let req = encode(42).unwrap();
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
    fn durations_must_be_positive_and_bounded() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "x", "1e30"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
