//! Observability end to end, with real processes on a private etcd: the status page every
//! example serves, a real Prometheus scraping them, and one trace across client → service →
//! cache peer. Needs the examples built (`cargo build --examples`, which `./scripts/test` runs;
//! they are built with the `otel` feature there).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use svckit::balancer::{HttpClient, Limits};
use svckit::registry::{Discovery, EtcdOptions, EtcdRegistry, Registry};
use svckit::status::Status;
use svckit_testing::process::{
    example_bin, spawn_example as spawn, spawn_example_with_env, terminate,
};
use svckit_testing::{free_port, CountingOrigin, Etcd, Prometheus};
use tokio::process::{Child, Command};

async fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    svckit_testing::process::wait_until(what, Duration::from_secs(30), ok).await;
}

async fn get(url: &str) -> (u16, String, Vec<u8>) {
    let resp = HttpClient::new()
        .get(url, Limits::default())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        resp.status().as_u16(),
        content_type,
        resp.into_body().to_vec(),
    )
}

/// The page once its lease lookups fit their 1 s budget: on a loaded machine one fetch may
/// not, and then says so in a note (up to 10 tries).
async fn settled_page(url: &str) -> (u16, String, Vec<u8>) {
    for _ in 0..10 {
        let page = get(url).await;
        if !String::from_utf8_lossy(&page.2).contains("lease TTLs unavailable") {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{url}: lease TTLs unavailable in 10 tries");
}

/// [`status`] once its lease lookups fit their budget (see [`settled_page`]).
async fn settled_status(base: &str) -> Status {
    let (code, _, body) = settled_page(&format!("{base}/_svckit/status?format=json")).await;
    assert_eq!(code, 200, "{base}/_svckit/status?format=json");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{base}: status JSON: {e}"))
}

async fn status(base: &str) -> Status {
    let (code, content_type, body) = get(&format!("{base}/_svckit/status?format=json")).await;
    assert_eq!(code, 200, "{base}/_svckit/status?format=json");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{base}: status JSON: {e}: {}",
            String::from_utf8_lossy(&body)
        )
    })
}

async fn discovery(etcd: &Etcd) -> (EtcdRegistry, Discovery) {
    let registry = EtcdRegistry::connect(EtcdOptions::new([etcd.endpoint()]))
        .await
        .unwrap();
    let discovery = registry.discovery();
    (registry, discovery)
}

/// [`spawn_example_with_env`] with the span files and the like given as paths.
fn spawn_with(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Child {
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    spawn_example_with_env(name, args, &env)
}

/// A product instance on a free port, with its base URL.
fn product(endpoint: &str, id: &str, env: &[(&str, &Path)]) -> (Child, String) {
    let port = free_port().to_string();
    let args = [
        "--port", &port, "--etcd", endpoint, "--id", id, "--ttl", "5",
    ];
    (
        spawn_with("product", &args, env),
        format!("http://127.0.0.1:{port}"),
    )
}

/// A cache node registered as `service`, loading from `origin`, with its base URL.
fn cache_node(
    endpoint: &str,
    service: &str,
    origin: &str,
    env: &[(&str, &Path)],
) -> (Child, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let args = [
        "--listen",
        &listen,
        "--etcd",
        endpoint,
        "--service",
        service,
        "--origin",
        origin,
        "--group",
        "pages",
    ];
    (
        spawn_with("cache_node", &args, env),
        format!("http://{listen}"),
    )
}

async fn wait_ring(nodes: &[&str], size: usize) {
    for node in nodes {
        for _ in 0..300 {
            let s = status(node).await;
            if s.caches.first().is_some_and(|c| c.ring.len() == size) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The tables of an HTML page, each a list of rows of cell texts (header rows included),
/// after checking that every element is closed in order. Enough of a parser for the status
/// page, which is generated; a stray or unclosed tag fails the test.
fn tables(html: &str) -> Vec<Vec<Vec<String>>> {
    const VOID: [&str; 3] = ["meta", "br", "!doctype"];
    let mut stack: Vec<String> = Vec::new();
    let mut tables: Vec<Vec<Vec<String>>> = Vec::new();
    let mut rest = html;
    let mut text = String::new();
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let close = rest[open..].find('>').expect("an unclosed tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim().to_ascii_lowercase();
            let top = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name, "</{name}> closes <{top}>");
            if name == "td" || name == "th" {
                let table = tables.last_mut().expect("a cell outside a table");
                let row = table.last_mut().expect("a cell outside a row");
                row.push(unescape(text.trim()));
                text.clear();
            }
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match name.as_str() {
            "table" => tables.push(Vec::new()),
            "tr" => tables
                .last_mut()
                .expect("a row outside a table")
                .push(Vec::new()),
            "td" | "th" => text.clear(),
            _ => {}
        }
        if !VOID.contains(&name.as_str()) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    tables
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The table whose header row starts with `first`.
fn table<'a>(tables: &'a [Vec<Vec<String>>], first: &str) -> &'a [Vec<String>] {
    tables
        .iter()
        .find(|t| {
            t.first()
                .and_then(|h| h.first())
                .is_some_and(|c| c == first)
        })
        .unwrap_or_else(|| panic!("no table starting with {first:?}: {tables:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_instances_registrations_calls_and_the_cache() {
    let mut etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (_registry, discovery) = discovery(&etcd).await;
    let origin = CountingOrigin::default();
    let origin_url = origin.start().await;

    let (_p1, p1) = product(&endpoint, "status_p1", &[]);
    let (_p2, _) = product(&endpoint, "status_p2", &[]);
    let (_c1, c1) = cache_node(&endpoint, "statuscache", &origin_url, &[]);
    let (_c2, c2) = cache_node(&endpoint, "statuscache", &origin_url, &[]);
    wait_until("two products and two cache nodes", || {
        discovery.instances("productservice").len() == 2
            && discovery.instances("statuscache").len() == 2
    })
    .await;
    wait_ring(&[&c1, &c2], 2).await;

    // A client calling the products, serving its own page while it runs.
    let client_port = free_port();
    let client_url = format!("http://127.0.0.1:{client_port}");
    let _client = spawn(
        "product_client",
        &[
            "--etcd",
            &endpoint,
            "--duration",
            "20",
            "--concurrency",
            "2",
            "--status-listen",
            &format!("127.0.0.1:{client_port}"),
        ],
    );

    // 40 keys asked twice at the first node: 80 gets there, the second round all hits.
    for round in 0..2 {
        for k in 0..40 {
            let (code, _, body) = get(&format!("{c1}/get?key=k{k}")).await;
            assert_eq!(
                code,
                200,
                "round {round} key k{k}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    // The product's page: both instances with their lease TTL, its own registration.
    let s = settled_status(&p1).await;
    assert_eq!(s.title, "productservice");
    let products = s
        .discovery
        .services
        .iter()
        .find(|svc| svc.name == "productservice")
        .expect("productservice on the product's page");
    let ids: Vec<&str> = products.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["status_p1", "status_p2"]);
    for i in &products.instances {
        let ttl = i.lease_ttl_seconds.expect("a lease TTL for every instance");
        assert!(ttl > 0.0 && ttl <= 5.0, "TTL {ttl} of {}", i.id);
        assert_eq!(i.this_process, i.id == "status_p1");
    }
    assert_eq!(s.discovery.state, "live");
    assert_eq!(s.registrations.len(), 1);
    let me = &s.registrations[0];
    assert_eq!(
        (me.id.as_str(), me.service.as_str()),
        ("status_p1", "productservice")
    );
    assert_eq!(me.in_registry, Some(true));
    assert!(me.discovered);
    assert!(s.caches.is_empty() && s.notes.is_empty(), "{:?}", s.notes);

    // The client's page: its Endpoint's calls.
    let mut calls = 0;
    for _ in 0..100 {
        let s = status(&client_url).await;
        if let Some(e) = s.endpoints.iter().find(|e| e.service == "productservice") {
            assert_eq!(e.picker, "round_robin");
            assert_eq!(e.failures, 0);
            calls = e.requests;
            if calls >= 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls >= 20, "the client's page shows {calls} calls");
    let later = status(&client_url).await.endpoints[0].requests;
    assert!(later >= calls, "calls went back from {calls} to {later}");

    // The first cache node's page: 80 gets, each a hit or a load (from the owner or its own
    // getter), the keys it owns hits in the second round; bytes within budget; a ring of two
    // summing to one.
    let s = status(&c1).await;
    let cache = &s.caches[0];
    assert_eq!(cache.node, c1);
    let group = cache.groups.iter().find(|g| g.name == "pages").unwrap();
    // Peers' gets count here too: the other node's fetches of keys this one owns, and its
    // handoff asks (this node held every key before the other joined).
    assert_eq!(group.gets - group.served_to_peers, 80, "{group:?}");
    assert!(
        group.hits >= group.local_loads && group.local_loads >= 5,
        "{group:?}"
    );
    assert_eq!(group.hit_ratio, Some(group.hits as f64 / group.gets as f64));
    assert!(
        group.bytes > 0 && group.bytes <= group.budget_bytes,
        "{group:?}"
    );
    assert_eq!(
        origin.total(),
        40,
        "each key loaded once across the two nodes"
    );
    assert_eq!(cache.ring.len(), 2);
    let total: f64 = cache.ring.iter().map(|r| r.share).sum();
    assert!((total - 1.0).abs() < 1e-9, "shares sum to {total}");
    assert!(cache.ring.iter().all(|r| r.share > 0.1), "{:?}", cache.ring);
    assert_eq!(cache.ring.iter().filter(|r| r.this_node).count(), 1);

    // The HTML: one well-formed page, no script or external asset, tables a person reads.
    let (code, content_type, body) = settled_page(&format!("{c1}/_svckit/status")).await;
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(body).unwrap();
    assert!(!html.contains("<script"), "no script");
    assert!(!html.contains("src="), "no external asset");
    let tables = tables(&html);
    let ring = table(&tables, "peer");
    assert_eq!(ring.len(), 3, "header and two peers: {ring:?}");
    assert!(ring[1..]
        .iter()
        .any(|r| r[0] == format!("{c1} (this node)")));
    let groups = table(&tables, "group");
    assert_eq!(groups[1][0], "pages");
    let column = |name: &str| {
        let i = groups[0].iter().position(|h| h == name).unwrap();
        groups[1][i].parse::<u64>().unwrap()
    };
    assert_eq!(column("gets") - column("served to peers"), 80);
    let instances: Vec<&Vec<String>> = tables
        .iter()
        .filter(|t| t[0][0] == "id")
        .flat_map(|t| t[1..].iter())
        .collect();
    let shown: HashSet<&str> = instances.iter().map(|r| r[0].as_str()).collect();
    assert!(
        shown.contains("status_p1") && shown.contains("status_p2"),
        "{shown:?}"
    );
    // A format it does not know is refused, not answered with HTML.
    let (code, _, body) = get(&format!("{c1}/_svckit/status?format=xml")).await;
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    let (code, content_type, _) = get(&format!("{c1}/_svckit/status?format=JSON")).await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    // A TTL cell for every instance ("4 s"), none missing.
    assert!(
        instances.iter().all(|r| r[2].ends_with(" s")),
        "{instances:?}"
    );

    // etcd gone: the page still answers (its lookups have a 1 s budget), from the last view,
    // and says what it could not ask.
    etcd.stop();
    let s = status(&p1).await;
    assert!(
        s.notes
            .iter()
            .any(|n| n.starts_with("lease TTLs unavailable")),
        "{:?}",
        s.notes
    );
    let products = s
        .discovery
        .services
        .iter()
        .find(|svc| svc.name == "productservice")
        .expect("the last view");
    assert_eq!(products.instances.len(), 2);
    assert!(products
        .instances
        .iter()
        .all(|i| i.lease_ttl_seconds.is_none()));
    assert_eq!(s.registrations[0].in_registry, None);
}

/// An instant query through Prometheus' HTTP API: label set → value.
async fn query(prometheus: &str, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let encoded =
        percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string();
    let (code, _, body) = get(&format!("{prometheus}/api/v1/query?query={encoded}")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(code, 200, "{q}: {v}");
    v["data"]["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{q}: {v}"))
        .iter()
        .map(|r| {
            let labels = r["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (labels, value)
        })
        .collect()
}

async fn query_one(prometheus: &str, q: &str) -> Option<f64> {
    query(prometheus, q).await.first().map(|(_, v)| *v)
}

/// Waits (30 s at most) until `q` gives `ok`, and returns the last value.
async fn eventually(prometheus: &str, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    for _ in 0..150 {
        last = query_one(prometheus, q).await;
        if last.is_some_and(&ok) {
            return last.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{q}: last value {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_sees_the_families_move_with_the_traffic() {
    if Prometheus::binary().is_none() {
        eprintln!(
            "prometheus is not installed (./scripts/install-deps --tests installs it): skipped"
        );
        return;
    };
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (_registry, discovery) = discovery(&etcd).await;
    let origin = CountingOrigin::default();
    let origin_url = origin.start().await;
    let (mut p1_child, p1) = product(&endpoint, "prom_p1", &[]);
    let (mut p2_child, p2) = product(&endpoint, "prom_p2", &[]);
    let (_c1, c1) = cache_node(&endpoint, "promcache", &origin_url, &[]);
    let (_c2, c2) = cache_node(&endpoint, "promcache", &origin_url, &[]);
    wait_until("two products and two cache nodes", || {
        discovery.instances("productservice").len() == 2
            && discovery.instances("promcache").len() == 2
    })
    .await;
    wait_ring(&[&c1, &c2], 2).await;
    let client_port = free_port();
    let client = format!("127.0.0.1:{client_port}");

    // Prometheus scrapes all five processes every 500 ms, and loads and evaluates the README's
    // alerting rules (docs/prometheus-alerts.yml).
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/prometheus-alerts.yml");
    let mut server = Prometheus::start(Duration::from_millis(500), &[rules])
        .await
        .unwrap();
    for (label, url) in [("p1", &p1), ("p2", &p2), ("c1", &c1), ("c2", &c2)] {
        server
            .scrape(label, url.trim_start_matches("http://"))
            .unwrap();
    }
    server.scrape("client", &client).unwrap();
    let prometheus = server.url();
    eventually(&prometheus, "count(up{job=\"svckit\"} == 1)", |v| v == 4.0).await;

    // Traffic: 200 product calls through the client; 30 keys asked twice at one cache node.
    let out = Command::new(example_bin("product_client"))
        .args([
            "--etcd",
            &endpoint,
            "--requests",
            "200",
            "--json",
            "--status-listen",
            &client,
            "--linger",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    for round in 0..2 {
        for k in 0..30 {
            let (code, _, _) = get(&format!("{c1}/get?key=k{k}")).await;
            assert_eq!(code, 200, "round {round} key k{k}");
        }
    }
    let out = out.await.unwrap();
    assert!(out.status.success(), "product_client failed");

    // Every family is there (the client's series went stale when it exited: the label API
    // still lists their names).
    let (code, _, body) = get(&format!("{prometheus}/api/v1/label/__name__/values")).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: HashSet<String> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.starts_with("svckit_"))
        .map(str::to_owned)
        .collect();
    for family in [
        "svckit_registry_registered",
        "svckit_registry_lease_keepalive_failures_total",
        "svckit_registry_reregistrations_total",
        "svckit_discovery_instances",
        "svckit_discovery_resyncs_total",
        "svckit_discovery_malformed_keys_total",
        "svckit_endpoint_requests_total",
        "svckit_endpoint_request_duration_seconds_bucket",
        "svckit_endpoint_retries_total",
        "svckit_endpoint_ejections_total",
        "svckit_endpoint_in_flight",
        "svckit_cache_gets_total",
        "svckit_cache_hits_total",
        "svckit_cache_loads_total",
        "svckit_cache_loads_deduped_total",
        "svckit_cache_peer_errors_total",
        "svckit_cache_getter_errors_total",
        "svckit_cache_bytes",
        "svckit_cache_items",
        "svckit_cache_evictions_total",
        "svckit_http_server_requests_total",
        "svckit_http_server_request_duration_seconds_bucket",
        "svckit_http_server_in_flight",
    ] {
        assert!(names.contains(family), "{family} missing from {names:?}");
    }

    // The Grafana dashboard in docs/ asks only for these families, in queries Prometheus
    // accepts.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-svckit.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$job", "svckit");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("svckit_") {
                    assert!(
                        names.contains(word),
                        "the dashboard asks for {word}, which nothing exports"
                    );
                }
            }
            query(&prometheus, &expr).await;
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} dashboard queries");

    // They move as the traffic says. 200 calls, every one answered by a product.
    eventually(
        &prometheus,
        "sum(last_over_time(svckit_endpoint_requests_total{service=\"productservice\",outcome=\"ok\"}[1m]))",
        |v| v == 200.0,
    )
    .await;
    eventually(
        &prometheus,
        "sum(svckit_http_server_requests_total{service=\"productservice\",route=\"/prod/{id}\",status=\"2xx\"})",
        |v| v == 200.0,
    )
    .await;
    // Both products served some (round robin).
    let per_instance = query(
        &prometheus,
        "sum by (instance) (svckit_http_server_requests_total{route=\"/prod/{id}\"})",
    )
    .await;
    assert_eq!(per_instance.len(), 2, "{per_instance:?}");
    assert!(
        per_instance.iter().all(|(_, v)| *v >= 50.0),
        "{per_instance:?}"
    );
    eventually(
        &prometheus,
        "sum(svckit_registry_registered{service=\"productservice\"})",
        |v| v == 2.0,
    )
    .await;
    // The cache: 60 gets at the first node, at least 30 hits; every load across the pair is
    // one origin fetch.
    eventually(
        &prometheus,
        "sum(svckit_cache_gets_total{group=\"pages\"})",
        |v| v >= 60.0,
    )
    .await;
    let gets_c1 = eventually(
        &prometheus,
        &format!(
            "svckit_cache_gets_total{{group=\"pages\",instance=\"{0}\"}} - svckit_cache_peer_requests_served_total{{group=\"pages\",instance=\"{0}\"}}",
            c1.trim_start_matches("http://")
        ),
        |v| v == 60.0,
    )
    .await;
    assert_eq!(gets_c1, 60.0);
    eventually(
        &prometheus,
        "sum(svckit_cache_hits_total{group=\"pages\"})",
        |v| v >= 30.0,
    )
    .await;
    eventually(
        &prometheus,
        "sum(svckit_cache_loads_total{group=\"pages\",source=\"local\"})",
        |v| v == origin.total() as f64,
    )
    .await;
    assert_eq!(origin.total(), 30);
    // The hit ratio at the first node, from Prometheus (what the demo prints), is the one its
    // status page shows.
    let page = status(&c1).await;
    let group = &page.caches[0].groups[0];
    assert_eq!(group.gets - group.served_to_peers, 60);
    let expected = group.hit_ratio.unwrap();
    eventually(
        &prometheus,
        &format!(
            "sum(svckit_cache_hits_total{{group=\"pages\",instance=\"{0}\"}}) / sum(svckit_cache_gets_total{{group=\"pages\",instance=\"{0}\"}})",
            c1.trim_start_matches("http://")
        ),
        |v| (v - expected).abs() < 1e-9,
    )
    .await;

    // A product leaves: every process still scraped sees one instance.
    eventually(
        &prometheus,
        "min(svckit_discovery_instances{service=\"productservice\"})",
        |v| v == 2.0,
    )
    .await;
    assert!(terminate(&mut p2_child, Duration::from_secs(20)).await == Some(0));
    eventually(
        &prometheus,
        "max(svckit_discovery_instances{service=\"productservice\"} and on(instance) up == 1)",
        |v| v == 1.0,
    )
    .await;
    drop(p2);

    // Every alerting rule evaluates without error; with the last product gone, "no instance"
    // goes pending for productservice (it fires after its 1 minute), and the Endpoint alert
    // is not active: the traffic above failed nothing.
    assert!(terminate(&mut p1_child, Duration::from_secs(20)).await == Some(0));
    drop(p1);
    let mut pending = Vec::new();
    for _ in 0..100 {
        let (_, _, body) = get(&format!("{prometheus}/api/v1/alerts")).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        pending = v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    a["labels"]["service"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        if pending
            .iter()
            .any(|(alert, _)| alert == "SvckitServiceHasNoInstance")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Only "no instance" is sure to be active: a loaded machine may also miss a keepalive
    // now and then, which that alert reports at once, and this test does not forbid.
    let no_instance: Vec<&str> = pending
        .iter()
        .filter(|(alert, _)| alert == "SvckitServiceHasNoInstance")
        .map(|(_, service)| service.as_str())
        .collect();
    assert_eq!(no_instance, ["productservice"], "{pending:?}");
    assert!(
        !pending
            .iter()
            .any(|(alert, _)| alert == "SvckitEndpointFailing"),
        "{pending:?}"
    );
    let (_, _, body) = get(&format!("{prometheus}/api/v1/rules")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let rules: Vec<&serde_json::Value> = v["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(rules.len(), 6, "{v}");
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
}

/// The spans a process wrote to its `SVCKIT_OTEL_SPANS` file.
fn spans(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_spans_client_service_and_cache_peer() {
    let etcd = Etcd::start();
    let endpoint = etcd.endpoint();
    let (_registry, discovery) = discovery(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(format!("{name}.jsonl"));
    let (product_spans, client_spans, a_spans, b_spans) =
        (file("product"), file("client"), file("a"), file("b"));

    // Client → product: every product request span is the child of a client span.
    let (_p, _) = product(
        &endpoint,
        "trace_p1",
        &[("SVCKIT_OTEL_SPANS", &product_spans)],
    );
    wait_until("the product", || {
        discovery.instances("productservice").len() == 1
    })
    .await;
    let out = Command::new(example_bin("product_client"))
        .args(["--etcd", &endpoint, "--requests", "5"])
        .env("RUST_LOG", "warn")
        .env("SVCKIT_OTEL_SPANS", &client_spans)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let client: HashMap<String, serde_json::Value> = spans(&client_spans)
        .into_iter()
        .map(|s| (s["span_id"].as_str().unwrap().to_owned(), s))
        .collect();
    let mut served = Vec::new();
    for _ in 0..50 {
        served = spans(&product_spans)
            .into_iter()
            .filter(|s| s["attributes"]["route"] == "/prod/{id}")
            .collect();
        if served.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.len(), 5, "five product request spans: {served:?}");
    for s in &served {
        // product's request span < the client's attempt < the client's Endpoint call.
        let attempt = &client[s["parent_span_id"].as_str().unwrap()];
        assert_eq!(attempt["trace_id"], s["trace_id"], "{s} under {attempt}");
        assert_eq!(attempt["name"], "attempt", "{attempt}");
        let call = &client[attempt["parent_span_id"].as_str().unwrap()];
        assert_eq!(call["trace_id"], s["trace_id"]);
        assert_eq!(call["attributes"]["service"], "productservice", "{call}");
        assert_eq!(call["attributes"]["outcome"], "ok", "{call}");
        assert_eq!(s["attributes"]["service"], "productservice", "{s}");
    }

    // Service → cache peer: a trace started by the caller continues on the node that was
    // asked and on the key's owner, across the peer protocol.
    let origin = CountingOrigin::default();
    let origin_url = origin.start().await;
    let (_a, a) = cache_node(
        &endpoint,
        "tracecache",
        &origin_url,
        &[("SVCKIT_OTEL_SPANS", &a_spans)],
    );
    let (_b, _) = cache_node(
        &endpoint,
        "tracecache",
        &origin_url,
        &[("SVCKIT_OTEL_SPANS", &b_spans)],
    );
    wait_until("two cache nodes", || {
        discovery.instances("tracecache").len() == 2
    })
    .await;
    wait_ring(&[&a], 2).await;
    let client = HttpClient::new();
    let mut traces = Vec::new();
    for k in 0..16u32 {
        let trace_id = format!("{:032x}", 0x5ec0_0000_u128 + u128::from(k));
        let parent = format!("{:016x}", 0xabc0_u64 + u64::from(k));
        let req = http::Request::get(format!("{a}/get?key=t{k}"))
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .body(bytes::Bytes::new())
            .unwrap();
        let resp = client.send(req, Limits::default()).await.unwrap();
        assert_eq!(resp.status(), 200);
        traces.push((trace_id, parent));
    }
    // About half the keys are owned by the other node: their trace has spans on both.
    let mut crossed = 0;
    for _ in 0..50 {
        let (on_a, on_b) = (spans(&a_spans), spans(&b_spans));
        crossed = 0;
        for (trace_id, parent) in &traces {
            let a_trace: Vec<_> = on_a
                .iter()
                .filter(|s| s["trace_id"] == **trace_id)
                .collect();
            let b_trace: Vec<_> = on_b
                .iter()
                .filter(|s| s["trace_id"] == **trace_id)
                .collect();
            // The asked node's request span continues the caller's span.
            assert!(
                a_trace.iter().any(|s| s["parent_span_id"] == **parent),
                "trace {trace_id}: no span of the first node under {parent}: {a_trace:?}"
            );
            if b_trace.is_empty() {
                continue;
            }
            let a_ids: HashSet<&str> = a_trace
                .iter()
                .map(|s| s["span_id"].as_str().unwrap())
                .collect();
            assert!(
                b_trace.iter().any(|s| a_ids.contains(s["parent_span_id"].as_str().unwrap())),
                "trace {trace_id}: the owner's spans hang under none of the first node's: {b_trace:?}"
            );
            crossed += 1;
        }
        if crossed >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        crossed >= 3,
        "only {crossed} of 16 traces reached the owner"
    );
}
