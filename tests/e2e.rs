//! End to end, with real processes: a private etcd, the example binaries as children, real
//! signals. Needs the examples built (`cargo build --examples`, which `./scripts/test` runs).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use svckit::balancer::{HttpClient, Limits};
use svckit::registry::{Discovery, EtcdOptions, EtcdRegistry, Registry};
use svckit_testing::metrics::Scrape;
use svckit_testing::process::{example_bin, spawn_example as spawn, terminate};
use svckit_testing::{free_port, Etcd};
use tokio::process::{Child, Command};

async fn sigterm_and_wait(child: &mut Child) -> Option<i32> {
    terminate(child, Duration::from_secs(20)).await
}

async fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    svckit_testing::process::wait_until(what, Duration::from_secs(30), ok).await;
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = HttpClient::new()
        .get(url, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (resp.status().as_u16(), resp.into_body().to_vec())
}

/// Removes a directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn json(url: &str) -> serde_json::Value {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "{url}");
    serde_json::from_slice(&body).unwrap()
}

async fn discovery(etcd: &Etcd) -> (EtcdRegistry, Discovery) {
    let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
        .await
        .unwrap();
    let discovery = registry.discovery();
    (registry, discovery)
}

/// Waits (up to 30 s) until instance `id` of productservice has answered a client's call,
/// as its own `/metrics` counts them.
async fn until_served(discovery: &Discovery, id: &str) {
    let served = || async {
        let Some(instance) = discovery
            .instances("productservice")
            .iter()
            .find(|i| i.id() == id)
            .cloned()
        else {
            return false;
        };
        let url = format!("http://{}/metrics", instance.addr());
        let Ok(resp) = HttpClient::new().get(&url, Limits::default()).await else {
            return false;
        };
        let text = String::from_utf8_lossy(resp.body()).into_owned();
        Scrape::parse(&text).is_ok_and(|s| {
            s.sum(
                "svckit_http_server_requests_total",
                &[("route", "/prod/{id}"), ("status", "2xx")],
            ) > 0.0
        })
    };
    let waited = svckit_testing::process::poll_until(Duration::from_secs(30), served).await;
    assert!(waited.is_some(), "{id} served no call within 30 s");
}

fn product(endpoint: &str, id: &str) -> Child {
    let port = free_port().to_string();
    spawn(
        "product",
        &[
            "--port", &port, "--etcd", endpoint, "--id", id, "--ttl", "5",
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_during_a_client_run_loses_no_call() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (_registry, discovery) = discovery(&etcd).await;
    let ids = |d: &Discovery| -> Vec<String> {
        d.instances("productservice")
            .iter()
            .map(|i| i.id().to_owned())
            .collect()
    };
    let mut a = product(&endpoint, "e2e_a");
    let mut b = product(&endpoint, "e2e_b");
    wait_until("two product instances", || {
        ids(&discovery) == ["e2e_a", "e2e_b"]
    })
    .await;

    let client = Command::new(example_bin("product_client"))
        .args(["--service", "productservice", "--balance", "round_robin"])
        .args([
            "--duration",
            "15",
            "--concurrency",
            "4",
            "--json",
            "--etcd",
            &endpoint,
        ])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let client = tokio::spawn(client);

    // One by one: SIGTERM an instance once the client has reached it (its key goes at
    // once), start its replacement.
    until_served(&discovery, "e2e_a").await;
    assert_eq!(
        sigterm_and_wait(&mut a).await,
        Some(0),
        "exit status after SIGTERM"
    );
    // Deleted before the exit; this watch hears of it a moment later.
    svckit_testing::process::wait_until(
        "the key gone once the process exited",
        Duration::from_secs(2),
        || ids(&discovery) == ["e2e_b"],
    )
    .await;
    let _c = product(&endpoint, "e2e_c");
    wait_until("e2e_c registered", || ids(&discovery).len() == 2).await;
    until_served(&discovery, "e2e_c").await;
    assert_eq!(
        sigterm_and_wait(&mut b).await,
        Some(0),
        "exit status after SIGTERM"
    );
    let _d = product(&endpoint, "e2e_d");
    wait_until("e2e_d registered", || ids(&discovery) == ["e2e_c", "e2e_d"]).await;
    until_served(&discovery, "e2e_d").await;

    let out = client.await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["failures"], 0, "{stdout}");
    assert!(summary["successes"].as_u64().unwrap() > 100, "{stdout}");
    for id in ["e2e_a", "e2e_b", "e2e_c", "e2e_d"] {
        assert!(
            summary["per_instance"][id].as_u64().unwrap_or(0) > 0,
            "{id} served nothing: {stdout}"
        );
    }
    assert!(out.status.success(), "client exit status {:?}", out.status);
}

/// The second line of a product answer (the live config's greeting and price).
async fn config_line(addr: &str) -> Result<String, String> {
    let resp = HttpClient::new()
        .get(&format!("http://{addr}/prod/7"), Limits::default())
        .await
        .map_err(|e| format!("GET {addr}: {e}"))?;
    let body = String::from_utf8_lossy(resp.body()).into_owned();
    match (resp.status().as_u16(), body.split_once('\n')) {
        (200, Some(("get product byID:7", line))) => Ok(line.to_owned()),
        (status, _) => Err(format!("{addr}: {status} {body:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_put_changes_every_instance_and_a_bad_value_is_refused() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (registry, discovery) = discovery(&etcd).await;
    let keys = registry.keyspace();
    let _children: Vec<Child> = (0..3)
        .map(|i| product(&endpoint, &format!("cfg_{i}")))
        .collect();
    wait_until("three product instances", || {
        discovery.instances("productservice").len() == 3
    })
    .await;
    let addrs: Vec<String> = discovery
        .instances("productservice")
        .iter()
        .map(|i| i.addr().to_owned())
        .collect();
    for addr in &addrs {
        assert_eq!(config_line(addr).await.unwrap(), "hello price 10.00");
    }

    // Callers keep calling every instance throughout; none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addrs, stop) = (addrs.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut calls, mut failures) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for addr in &addrs {
                    calls += 1;
                    if let Err(e) = config_line(addr).await {
                        failures.push(e);
                    }
                }
            }
            (calls, failures)
        })
    };

    // One put (two keys, one transaction): every instance answers with it.
    let put = Instant::now();
    keys.commit(
        svckit::registry::Txn::new()
            .put("/config/productservice/greeting", "welcome")
            .put("/config/productservice/price_factor", "1.5"),
    )
    .await
    .unwrap();
    let mut lags = Vec::new();
    for addr in &addrs {
        loop {
            if config_line(addr).await.unwrap() == "welcome price 15.00" {
                lags.push(put.elapsed());
                break;
            }
            assert!(
                put.elapsed() < Duration::from_secs(2),
                "{addr} never changed"
            );
        }
    }
    println!("put -> all three instances answer with it: {lags:?}");

    // A factor that is not a number, then one out of range: refused, the last good stays.
    keys.put("/config/productservice/price_factor", "cheap")
        .await
        .unwrap();
    keys.put("/config/productservice/price_factor", "-3")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for addr in &addrs {
        assert_eq!(config_line(addr).await.unwrap(), "welcome price 15.00");
    }
    keys.put("/config/productservice/price_factor", "2")
        .await
        .unwrap();
    for addr in &addrs {
        let start = Instant::now();
        while config_line(addr).await.unwrap() != "welcome price 20.00" {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{addr} never changed"
            );
        }
    }

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failures) = load.await.unwrap();
    assert!(calls > 30, "only {calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {failures:?}",
        failures.len()
    );
}

/// Runs `product` with `args`, expecting a quick failure that says what failed on its first
/// line (`Error: ...`, anyhow's report from `main`) and why below it.
async fn product_fails(args: &[&str], expect: &str) {
    product_fails_with_env(args, &[], expect).await;
}

/// [`product_fails`] with environment variables set.
async fn product_fails_with_env(args: &[&str], env: &[(&str, &str)], expect: &str) {
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        Command::new(example_bin("product"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fails at once, not after a long wait")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no colour codes into a pipe: {stderr:?}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("Error: "),
        "says what failed first: {stderr}"
    );
    assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn product_fails_fast_on_bad_name_busy_port_and_unreachable_etcd() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    product_fails(
        &[
            "--name",
            "product-service",
            "--port",
            "0",
            "--etcd",
            &endpoint,
        ],
        "invalid name \"product-service\"",
    )
    .await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    product_fails(
        &["--port", &port, "--etcd", &endpoint],
        "Error: cannot listen on",
    )
    .await;
    let nobody = format!("127.0.0.1:{}", free_port());
    product_fails(
        &["--port", "0", "--etcd", &nobody],
        "no etcd endpoint answered",
    )
    .await;
    // etcd answers here: the line says what it refused, not that it cannot be reached.
    product_fails_with_env(
        &["--port", "0", "--etcd", &endpoint],
        &[("SVCKIT_ETCD_USER", "svckit")],
        "Error: cannot connect to etcd at 127.0.0.1:",
    )
    .await;
    product_fails_with_env(
        &["--port", "0", "--etcd", &endpoint],
        &[("SVCKIT_ETCD_USER", "svckit")],
        "etcd user \"svckit\" was given without a password",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_when_asked() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        Command::new(example_bin("product"))
            .args(["--port", "0", "--etcd", &nobody])
            .env("SVCKIT_LOG_FORMAT", "json")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("fails at once")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!events.is_empty(), "{stderr}");
    assert!(events
        .iter()
        .all(|e| e["level"].is_string() && e["timestamp"].is_string() && e["message"].is_string()));
    // Only anyhow's final report is not a log event.
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with('{') || !l.contains("DEBUG")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn product_names_wrong_credentials_and_missing_ones() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let mut raw = etcd_client::Client::connect([endpoint.clone()], None)
        .await
        .unwrap();
    raw.user_add("root", "right", None).await.unwrap();
    raw.user_grant_role("root", "root").await.unwrap();
    raw.auth_enable().await.unwrap();
    let args = ["--port", "0", "--etcd", endpoint.as_str()];
    product_fails_with_env(
        &args,
        &[
            ("SVCKIT_ETCD_USER", "root"),
            ("SVCKIT_ETCD_PASSWORD", "wrong"),
        ],
        "etcd authentication failed for user \"root\": wrong user name or password",
    )
    .await;
    product_fails_with_env(
        &args,
        &[],
        "etcd requires authentication and no user was given",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thumbnail_instances_fetch_each_thumbnail_once() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (_registry, discovery) = discovery(&etcd).await;
    let origin = format!("127.0.0.1:{}", free_port());
    // The origin writes its samples here; removed at the end whatever the origin's fate.
    let dir = std::env::temp_dir().join(format!("svckit-e2e-origin-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let _origin = spawn(
        "origin",
        &["--listen", &origin, "--dir", dir.to_str().unwrap()],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(&origin).await.is_err() {
        assert!(Instant::now() < deadline, "the origin never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let thumbs = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    ];
    let origin_url = format!("http://{origin}");
    let _children: Vec<Child> = thumbs
        .iter()
        .map(|listen| {
            spawn(
                "thumbnail",
                &[
                    "--listen",
                    listen,
                    "--origin",
                    &origin_url,
                    "--etcd",
                    &endpoint,
                ],
            )
        })
        .collect();
    wait_until("two thumbnail instances", || {
        discovery.instances("thumbnail").len() == 2
    })
    .await;
    for t in &thumbs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while json(&format!("http://{t}/stats")).await["peers"]
            .as_array()
            .map_or(0, Vec::len)
            != 2
        {
            assert!(Instant::now() < deadline, "{t} never saw both peers");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let paths = [
        "/v1/image/100x100/sample.png",
        "/v1/image/50x50/sample.png",
        "/v1/image/120x90/photo.jpg",
        "/v1/image/32x32/logo.gif",
        "/v1/image/300x100/banner.jpeg",
    ];
    for path in paths {
        let (s1, b1) = get(&format!("http://{}{path}", thumbs[0])).await;
        let (s2, b2) = get(&format!("http://{}{path}", thumbs[1])).await;
        assert_eq!(
            (s1, s2),
            (200, 200),
            "{path}: {}",
            String::from_utf8_lossy(&b1)
        );
        assert_eq!(b1, b2, "both instances return the same bytes for {path}");
        // Asked again: no new production anywhere.
        assert_eq!(get(&format!("http://{}{path}", thumbs[1])).await.1, b1);
    }
    let origin_stats = json(&format!("{origin_url}/_stats")).await;
    assert_eq!(origin_stats["total"], paths.len(), "{origin_stats}");
    let mut local_loads = 0;
    for t in &thumbs {
        let stats = json(&format!("http://{t}/stats")).await;
        assert_eq!(stats["peer_errors"], 0, "{stats}");
        local_loads += stats["local_loads"].as_u64().unwrap();
    }
    assert_eq!(local_loads, paths.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_pair_example_loads_each_key_once_across_two_nodes() {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(example_bin("cache_pair"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the example ends by itself")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("getter calls: 5 for 5 keys asked on both nodes"),
        "{stdout}"
    );
    // Both nodes answer every key with the owner's value: one line per node and key.
    assert_eq!(
        stdout.matches("loaded by http://127.0.0.1:").count(),
        10,
        "{stdout}"
    );
}
