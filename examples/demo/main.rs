//! The svckit demo: a private etcd, three `product` instances, two `thumbnail` instances that
//! share one group cache, and the image `origin`, all as real child processes. It runs
//! `product_client` with every picker, asks both thumbnail instances for the same thumbnails,
//! changes the products' live config with one etcd transaction, restarts a product instance
//! during a client run, prints a summary and stops everything.
//!
//! Run with: `./scripts/demo` (or `cargo build --examples && cargo run --example demo`;
//! `-- --etcd 127.0.0.1:2379` uses an existing etcd instead of a private one).
//! `./scripts/demo --prometheus` also starts a Prometheus scraping every process, and prints
//! from its query API the requests per instance during the rolling restart and the cache's
//! hit ratio.

#[path = "../common/mod.rs"]
mod common;
mod prometheus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use prometheus::Prometheus;
use svckit::balancer::{HttpClient, Limits};
use svckit::registry::{Discovery, EtcdRegistry, Registry, Txn};
use svckit_testing::process::{example_bin, Fleet};

/// Flags of the demo.
#[derive(Debug, Parser)]
struct Args {
    /// An existing etcd endpoint to use instead of starting a private one.
    #[arg(long)]
    etcd: Option<String>,
    /// Requests per picker run.
    #[arg(long, default_value_t = 300)]
    requests: u32,
    /// Start a Prometheus scraping every process, and print what it saw.
    #[arg(long)]
    prometheus: bool,
}

/// One `product_client` run's summary, read from its `--json` line.
#[derive(Debug, serde::Deserialize)]
struct Summary {
    requests: u64,
    successes: u64,
    failures: u64,
    per_instance: BTreeMap<String, u64>,
    p50_ms: f64,
    p99_ms: f64,
}

/// The flags of product instance `n` and its address, remembering its label for the spread
/// printout.
fn product_args(
    n: usize,
    etcd: &str,
    names: &mut BTreeMap<String, String>,
) -> (Vec<String>, String) {
    let port = svckit_testing::free_port();
    let id = format!("product{n}");
    names.insert(id.clone(), format!("product{n}(:{port})"));
    let args = vec![
        "--name".into(),
        "productservice".into(),
        "--port".into(),
        port.to_string(),
        "--etcd".into(),
        etcd.into(),
        "--id".into(),
        id,
        "--ttl".into(),
        "5".into(),
    ];
    (args, format!("127.0.0.1:{port}"))
}

fn free_addr() -> String {
    format!("127.0.0.1:{}", svckit_testing::free_port())
}

async fn wait_for(
    discovery: &Discovery,
    name: &str,
    what: impl Fn(&svckit::registry::Instances) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut watch = discovery.watch(name)?;
    loop {
        if what(&watch.snapshot()) {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "timed out waiting for the instances of {name} ({:?})",
                watch.snapshot()
            );
        }
        let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), watch.changed()).await;
    }
}

async fn client_run(etcd: &str, balance: &str, load: &[&str]) -> anyhow::Result<Summary> {
    let mut args: Vec<String> = vec![
        "--service".into(),
        "productservice".into(),
        "--balance".into(),
        balance.into(),
        "--etcd".into(),
        etcd.into(),
        "--concurrency".into(),
        "8".into(),
        "--json".into(),
    ];
    args.extend(load.iter().map(|s| s.to_string()));
    let out = tokio::process::Command::new(example_bin("product_client"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .context("running product_client")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("product_client printed {stdout:?}"))
}

fn spread(s: &Summary, names: &BTreeMap<String, String>) -> String {
    s.per_instance
        .iter()
        .map(|(id, n)| {
            let label = names.get(id).map(String::as_str).unwrap_or(id.as_str());
            format!("{label}={n}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn http_get(url: &str) -> anyhow::Result<(u16, Bytes)> {
    let resp = HttpClient::new().get(url, Limits::default()).await?;
    Ok((resp.status().as_u16(), resp.into_body()))
}

/// Waits until `url` answers 200.
async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if matches!(http_get(url).await, Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `args` as the `&str`s [`Fleet::spawn`] takes.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The second line of a product's answer: its live greeting and price.
async fn config_line(addr: &str) -> anyhow::Result<String> {
    let (_, body) = http_get(&format!("http://{addr}/prod/1")).await?;
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok(body.lines().nth(1).unwrap_or_default().to_owned())
}

/// Puts a greeting and a price factor in one transaction, shows how soon each product
/// instance answers with them, then puts an invalid factor that every instance refuses.
async fn live_config(registry: &EtcdRegistry, discovery: &Discovery) -> anyhow::Result<bool> {
    let keys = registry.keyspace();
    let put = Instant::now();
    keys.commit(
        Txn::new()
            .put("/config/productservice/greeting", "welcome")
            .put("/config/productservice/price_factor", "1.2"),
    )
    .await?;
    let mut ok = true;
    for instance in discovery.instances("productservice").iter() {
        let line = loop {
            let line = config_line(instance.addr()).await?;
            if line == "welcome price 12.00" || put.elapsed() > Duration::from_secs(2) {
                break line;
            }
        };
        ok &= line == "welcome price 12.00";
        println!(
            "  {}: {line:?} {:.1} ms after the put",
            instance.id(),
            put.elapsed().as_secs_f64() * 1e3
        );
    }
    keys.put("/config/productservice/price_factor", "cheap")
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for instance in discovery.instances("productservice").iter() {
        let line = config_line(instance.addr()).await?;
        ok &= line == "welcome price 12.00";
        println!(
            "  {} after price_factor=cheap (refused): {line:?}",
            instance.id()
        );
    }
    // Put a valid value back: an instance started on an invalid value would start on its
    // defaults (running ones keep their last good value).
    keys.put("/config/productservice/price_factor", "1.2")
        .await?;
    Ok(ok)
}

/// With `--prometheus`, has it scrape the process `name` at `addr` too.
fn scrape(prometheus: &mut Option<Prometheus>, name: &str, addr: &str) -> anyhow::Result<()> {
    match prometheus {
        Some(p) => p.scrape(name, addr),
        None => Ok(()),
    }
}

/// The thumbnail cache's hit ratio over both instances, once Prometheus has scraped every
/// get the instances counted (their own `/stats`; a fetch from the owner is a get there too).
async fn print_hit_ratio(prometheus: &Prometheus, thumbs: &[String]) -> anyhow::Result<()> {
    let mut counted = 0;
    for t in thumbs {
        let (_, body) = http_get(&format!("http://{t}/stats")).await?;
        let stats: serde_json::Value = serde_json::from_slice(&body)?;
        counted += stats["gets"].as_u64().unwrap_or(0);
    }
    let gets = "sum(svckit_cache_gets_total{group=\"thumbnails\"})";
    let deadline = Instant::now() + Duration::from_secs(10);
    while prometheus.scalar(gets).await? != Some(counted as f64) {
        if Instant::now() > deadline {
            bail!("prometheus did not see the {counted} thumbnail gets within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hits = "sum(svckit_cache_hits_total{group=\"thumbnails\"})";
    let ratio = format!("{hits} / {gets}");
    println!(
        "  cache hit ratio (from prometheus: {ratio}): {:.2}",
        prometheus.scalar(&ratio).await?.unwrap_or(f64::NAN)
    );
    Ok(())
}

async fn run(args: Args, etcd: String, fleet: &mut Fleet) -> anyhow::Result<()> {
    println!("etcd: {etcd}");
    let registry = EtcdRegistry::connect(common::etcd_options(&etcd)?).await?;
    let discovery = registry.discovery();
    let mut prometheus = match args.prometheus {
        true => Some(Prometheus::start().await?),
        false => None,
    };

    // The origin, three products, two thumbnails.
    let origin = free_addr();
    fleet.spawn("origin", "origin", &["--listen", &origin]);
    scrape(&mut prometheus, "origin", &origin)?;
    wait_ready(&format!("http://{origin}/_stats")).await?;
    let mut names = BTreeMap::new();
    let mut products = Vec::new();
    for n in 1..=3 {
        let (a, addr) = product_args(n, &etcd, &mut names);
        products.push(fleet.spawn(&format!("product{n}"), "product", &strs(&a)));
        scrape(&mut prometheus, &format!("product{n}"), &addr)?;
    }
    let mut thumbs = Vec::new();
    for n in 1..=2 {
        let listen = free_addr();
        let origin_url = format!("http://{origin}");
        let flags = [
            "--listen",
            &listen,
            "--origin",
            &origin_url,
            "--etcd",
            &etcd,
        ];
        fleet.spawn(&format!("thumbnail{n}"), "thumbnail", &flags);
        scrape(&mut prometheus, &format!("thumbnail{n}"), &listen)?;
        thumbs.push(listen);
    }
    wait_for(&discovery, "productservice", |i| i.len() == 3).await?;
    wait_for(&discovery, "thumbnail", |i| i.len() == 2).await?;
    for t in &thumbs {
        // Each instance's cache ring must know both peers before the first thumbnail.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, body) = http_get(&format!("http://{t}/stats")).await?;
            let stats: serde_json::Value = serde_json::from_slice(&body)?;
            if stats["peers"].as_array().map_or(0, Vec::len) == 2 {
                break;
            }
            if Instant::now() > deadline {
                bail!("thumbnail {t} never saw both cache peers");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("\n3 product instances and 2 thumbnail instances registered:");
    for i in discovery.all() {
        println!("  /services/{}/{} -> {}", i.id(), i.name(), i.addr());
    }
    println!(
        "  each serves /_svckit/status and /metrics, e.g. http://{}/_svckit/status",
        thumbs[0]
    );
    if let Some(p) = &prometheus {
        p.wait_scraping().await?;
        println!(
            "  prometheus at {} scrapes all 6 processes every 500 ms",
            p.url()
        );
    }

    // Every picker.
    println!("\nproduct_client, {} requests per picker:", args.requests);
    let requests = args.requests.to_string();
    let mut total_failures = 0;
    for balance in ["random", "round_robin", "hash", "p2c"] {
        let s = client_run(&etcd, balance, &["--requests", &requests]).await?;
        total_failures += s.failures;
        println!(
            "  {balance:<12} {}/{} ok, p50 {:.2} ms, p99 {:.2} ms, spread: {}",
            s.successes,
            s.requests,
            s.p50_ms,
            s.p99_ms,
            spread(&s, &names)
        );
    }

    // Live config: one etcd transaction changes what every product instance answers.
    println!(
        "\nlive config: one etcd transaction puts /config/productservice/{{greeting,price_factor}}"
    );
    let config_ok = live_config(&registry, &discovery).await?;

    // Thumbnails: the same ones from both instances, each produced once.
    println!("\nthumbnails from both instances:");
    let wanted = [
        "/v1/image/100x100/sample.png",
        "/v1/image/200x150/photo.jpg",
        "/v1/image/64x64/logo.gif",
        "/v1/image/300x100/banner.jpeg",
    ];
    let mut same = 0;
    for path in wanted {
        let (s1, b1) = http_get(&format!("http://{}{path}", thumbs[0])).await?;
        let (s2, b2) = http_get(&format!("http://{}{path}", thumbs[1])).await?;
        let img = image::load_from_memory(&b1).map(|i| (i.width(), i.height()));
        println!(
            "  {path}: {s1}/{s2}, {} bytes, {:?}, identical: {}",
            b1.len(),
            img.unwrap_or_default(),
            b1 == b2
        );
        if s1 == 200 && b1 == b2 {
            same += 1;
        }
    }
    let (_, stats) = http_get(&format!("http://{origin}/_stats")).await?;
    let stats: serde_json::Value = serde_json::from_slice(&stats)?;
    let origin_fetches = stats["total"].as_u64().unwrap_or(0);
    println!(
        "  origin fetches: {origin_fetches} for {} thumbnails asked {} times",
        wanted.len(),
        wanted.len() * 2
    );
    if let Some(p) = &prometheus {
        print_hit_ratio(p, &thumbs).await?;
    }

    // A rolling restart during a client run.
    println!("\nrolling restart: SIGTERM product1 during a 10 s client run, then start product4");
    let restart_started = SystemTime::now();
    let client = {
        let etcd = etcd.clone();
        tokio::spawn(async move { client_run(&etcd, "round_robin", &["--duration", "10"]).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let code = fleet.terminate(products[0], Duration::from_secs(10)).await;
    wait_for(&discovery, "productservice", |i| {
        i.iter().all(|x| x.id() != "product1")
    })
    .await?;
    println!("  product1 exited with {code:?}; its key is gone from etcd");
    let (a, addr) = product_args(4, &etcd, &mut names);
    fleet.spawn("product4", "product", &strs(&a));
    scrape(&mut prometheus, "product4", &addr)?;
    wait_for(&discovery, "productservice", |i| {
        i.iter().any(|x| x.id() == "product4")
    })
    .await?;
    println!("  product4 registered");
    let s = client.await??;
    total_failures += s.failures;
    println!(
        "  client: {}/{} ok, {} failed, spread: {}",
        s.successes,
        s.requests,
        s.failures,
        spread(&s, &names)
    );
    let product4_calls = s.per_instance.get("product4").copied().unwrap_or(0);
    if let Some(p) = &prometheus {
        prometheus::print_requests_per_instance(p, restart_started, SystemTime::now()).await?;
    }

    println!("\nsummary:");
    println!("  failed calls over all runs: {total_failures}");
    println!(
        "  thumbnails identical on both instances: {same}/{}",
        wanted.len()
    );
    println!(
        "  origin fetches: {origin_fetches} (one per thumbnail: {})",
        origin_fetches == wanted.len() as u64
    );
    println!("  calls served by the restarted instance product4: {product4_calls}");
    println!("  live config reached every product instance, bad value refused: {config_ok}");
    drop(registry);
    fleet.stop_all(Duration::from_secs(5)).await;
    if total_failures != 0
        || same != wanted.len()
        || origin_fetches != wanted.len() as u64
        || !config_ok
    {
        bail!("the demo did not go as expected (see above)");
    }
    println!("  everything stopped; done.");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    common::init_telemetry("demo");
    let args = Args::parse();
    let mut fleet = Fleet::new();
    // The private etcd outlives every child, so they can deregister on the way out.
    let mut private_etcd = None;
    let etcd = match &args.etcd {
        Some(e) => e.clone(),
        None => {
            println!("starting a private etcd on loopback ...");
            let etcd = tokio::task::spawn_blocking(svckit_testing::Etcd::start)
                .await
                .context("cannot start etcd")?;
            private_etcd.insert(etcd).endpoint()
        }
    };
    let result = tokio::select! {
        r = run(args, etcd, &mut fleet) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let left = fleet.running();
    fleet.stop_all(Duration::from_secs(5)).await;
    drop(private_etcd);
    if result.is_err() && !left.is_empty() {
        eprintln!("stopped what was still running: {}", left.join(", "));
    }
    result
}
